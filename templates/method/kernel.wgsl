// my-method's kernel: a per-channel scale y = x ⊙ (1 + s), s [C] broadcast
// over the rows of x viewed as [R, C]. Forward and backward entry points:
//   scale_forward     y[r, c]   = x[r, c] · (1 + s[c])
//   scale_backward_x  dx[r, c] += dy[r, c] · (1 + s[c])
//   scale_backward_s  ds[c]    += Σ_r dy[r, c] · x[r, c]
// (one thread per channel, rows in order: deterministic, no atomics).
// Bindings follow the engine's layout: 0 the uniform parameters, then the
// tensors of e.dispatch in order (read, read, written). 256 threads per
// workgroup on a 2-D grid (grid1d): i = gid.x + gid.y * nwg.x * 256.

struct Params { n: u32, C: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

// a = x, b = s, dst = y
@compute @workgroup_size(256)
fn scale_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  dst[i] = a[i] * (1.0 + b[i % p.C]);
}

// a = dy, b = s, dst = dx (accumulated)
@compute @workgroup_size(256)
fn scale_backward_x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  dst[i] += a[i] * (1.0 + b[i % p.C]);
}

// a = dy, b = x, dst = ds (accumulated); n = R · C
@compute @workgroup_size(256)
fn scale_backward_s(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let c = gid.x + gid.y * nwg.x * 256u;
  if (c >= p.C) { return; }
  var acc = 0.0;
  for (var i = c; i < p.n; i += p.C) {
    acc += a[i] * b[i];
  }
  dst[c] += acc;
}
