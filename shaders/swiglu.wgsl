// SwiGLU gating (Shazeer 2020), the LLaMA MLP nonlinearity, elementwise:
//   s = sigmoid(g),  silu(g) = g s
//   forward:  out = silu(g) * u
//   backward: dg += dout * u * s * (1 + g (1 - s))     (d silu/dg = s + g s (1 - s))
//             du += dout * silu(g)
// sigmoid is evaluated as 1/(1+e^-g) for g >= 0 and e^g/(1+e^g) for g < 0, so
// exp never overflows (WGSL leaves overflowing exp indeterminate).
//
// 256 threads per workgroup, 2-D grid: i = gid.x + gid.y * nwg.x * 256.

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;

fn sigmoid(g: f32) -> f32 {
  let z = exp(-abs(g));            // in (0, 1]
  let s = 1.0 / (1.0 + z);         // sigmoid(|g|)
  return select(z * s, s, g >= 0.0);
}

@group(0) @binding(1) var<storage, read> f_gate: array<f32>;
@group(0) @binding(2) var<storage, read> f_up: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_out: array<f32>;

@compute @workgroup_size(256)
fn swiglu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let g = f_gate[i];
  f_out[i] = g * sigmoid(g) * f_up[i];
}

// Backward into both inputs (gate and up are distinct tensors).
@group(0) @binding(1) var<storage, read> b_dout: array<f32>;
@group(0) @binding(2) var<storage, read> b_gate: array<f32>;
@group(0) @binding(3) var<storage, read> b_up: array<f32>;
@group(0) @binding(4) var<storage, read_write> b_dgate: array<f32>;
@group(0) @binding(5) var<storage, read_write> b_dup: array<f32>;

@compute @workgroup_size(256)
fn swiglu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let g = b_gate[i];
  let s = sigmoid(g);
  let d = b_dout[i];
  b_dgate[i] += d * b_up[i] * s * (1.0 + g * (1.0 - s));
  b_dup[i] += d * g * s;
}

// Backward into one input only: dst += dout * (gate path or up path), chosen by entry point.
@group(0) @binding(4) var<storage, read_write> o_dst: array<f32>;

@compute @workgroup_size(256)
fn swiglu_backward_gate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let g = b_gate[i];
  let s = sigmoid(g);
  o_dst[i] += b_dout[i] * b_up[i] * s * (1.0 + g * (1.0 - s));
}

@compute @workgroup_size(256)
fn swiglu_backward_up(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let g = b_gate[i];
  o_dst[i] += b_dout[i] * g * sigmoid(g);
}

// ---- vec4 versions (n % 4 == 0; p.n counts vec4s) ------------------------------------
// One thread per 4 elements: on SwiftShader each storage access is a per-lane
// gather/scatter of ~7-10 ns whatever its width, so vec4 accesses cut the
// cost of these memory-bound kernels about 3x. Same math as above.

fn sigmoid4(g: vec4<f32>) -> vec4<f32> {
  let z = exp(-abs(g));
  let s = 1.0 / (1.0 + z);
  return select(z * s, s, g >= vec4<f32>(0.0));
}

@group(0) @binding(1) var<storage, read> f4_gate: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> f4_up: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> f4_out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn swiglu_forward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let g = f4_gate[i];
  f4_out[i] = g * sigmoid4(g) * f4_up[i];
}

@group(0) @binding(1) var<storage, read> b4_dout: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4_gate: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b4_up: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> b4_dgate: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> b4_dup: array<vec4<f32>>;

@compute @workgroup_size(256)
fn swiglu_backward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let g = b4_gate[i];
  let s = sigmoid4(g);
  let d = b4_dout[i];
  b4_dgate[i] += d * b4_up[i] * s * (1.0 + g * (1.0 - s));
  b4_dup[i] += d * g * s;
}

@group(0) @binding(4) var<storage, read_write> o4_dst: array<vec4<f32>>;

@compute @workgroup_size(256)
fn swiglu_backward_gate4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let g = b4_gate[i];
  let s = sigmoid4(g);
  o4_dst[i] += b4_dout[i] * b4_up[i] * s * (1.0 + g * (1.0 - s));
}

@compute @workgroup_size(256)
fn swiglu_backward_up4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let g = b4_gate[i];
  o4_dst[i] += b4_dout[i] * g * sigmoid4(g);
}
