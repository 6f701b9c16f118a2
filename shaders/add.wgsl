// Elementwise residual add, out = a + b, and its backward.
//   forward:  out[i] = a[i] + b[i]
//   backward: da[i] += dout[i], db[i] += dout[i]
// The backward is one accumulate kernel run once per input that needs a
// gradient (a and b may be the same tensor, so their gradients may alias and
// cannot both be bound read_write in one dispatch).
//
// Launch grid: 256 threads per workgroup, workgroups laid out 2-D (x, y) so
// that more than 65535 * 256 elements fit; element i = gid.x + gid.y * nwg.x * 256.

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn add_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  out[i] = a[i] + b[i];
}

// Bindings for the backward: dout (read), dx (read_write).
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn add_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  dx[i] += dout[i];
}

// ---- vec4 versions (n % 4 == 0; p.n counts vec4s) ------------------------------------
// On SwiftShader each storage access costs ~7-10 ns per invocation whatever
// its width, so one thread per 4 elements is ~3x faster; same math.
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn add_forward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  out4[i] = a4[i] + b4[i];
}

@group(0) @binding(1) var<storage, read> dout4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dx4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn add_backward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  dx4[i] += dout4[i];
}
