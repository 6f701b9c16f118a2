// Elementwise products.
//   mul:     y = a ⊙ b (same shapes);        da += dout ⊙ b, db += dout ⊙ a
//   mulvec:  y[r, c] = x[r, c] · v[c]       (v broadcast over the rows of a [R, C] view)
//            dx[r, c] += dout[r, c] · v[c]
//            dv[c]    += Σ_r dout[r, c] · x[r, c]   (one thread per column, rows in order:
//                                                     deterministic, no atomics)
// 256 threads per workgroup, 2-D grid: i = gid.x + gid.y * nwg.x * 256.

struct Params { n: u32, C: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> f_a: array<f32>;
@group(0) @binding(2) var<storage, read> f_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_y: array<f32>;

@compute @workgroup_size(256)
fn mul_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  f_y[i] = f_a[i] * f_b[i];
}

@compute @workgroup_size(256)
fn mulvec_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  f_y[i] = f_a[i] * f_b[i % p.C];
}

// dst += dout ⊙ other (mul backward into either input).
@group(0) @binding(1) var<storage, read> b_dout: array<f32>;
@group(0) @binding(2) var<storage, read> b_other: array<f32>;
@group(0) @binding(3) var<storage, read_write> b_dst: array<f32>;

@compute @workgroup_size(256)
fn mul_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  b_dst[i] += b_dout[i] * b_other[i];
}

// dx += dout ⊙ v (broadcast); `other` is v here.
@compute @workgroup_size(256)
fn mulvec_backward_x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  b_dst[i] += b_dout[i] * b_other[i % p.C];
}

// dv[c] += Σ_r dout[r, c] x[r, c]; `other` is x here, one thread per column.
@compute @workgroup_size(256)
fn mulvec_backward_v(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let c = gid.x + gid.y * nwg.x * 256u;
  if (c >= p.C) { return; }
  var s = 0.0;
  for (var i = c; i < p.n; i += p.C) { s += b_dout[i] * b_other[i]; }
  b_dst[c] += s;
}
