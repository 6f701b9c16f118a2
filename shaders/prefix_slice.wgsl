// Column block of a matrix, broadcast over a batch (prefix tuning: one layer's
// keys or values out of the prefix matrix Z [R, F]):
//   forward:  out[b, j, w] = z[j, off + w]             b < B, j < R, w < W
//   backward: dz[j, off + w] += Σ_b dout[b, j, w]
// Each dz entry is owned by one backward thread, which sums over b itself: no
// atomics, and the blocks of different calls (different off) are disjoint.
//
// 256 threads per workgroup, 2-D grid: i = gid.x + gid.y * nwg.x * 256.

struct Params { B: u32, R: u32, W: u32, F: u32, off: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> f_z: array<f32>;
@group(0) @binding(2) var<storage, read_write> f_out: array<f32>;

@compute @workgroup_size(256)
fn prefix_slice_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  let rw = p.R * p.W;
  if (i >= p.B * rw) { return; }
  let r = i % rw;           // (j, w) within one batch copy
  let j = r / p.W;
  let w = r % p.W;
  f_out[i] = f_z[j * p.F + p.off + w];
}

@group(0) @binding(1) var<storage, read> b_dout: array<f32>;
@group(0) @binding(2) var<storage, read_write> b_dz: array<f32>;

@compute @workgroup_size(256)
fn prefix_slice_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  let rw = p.R * p.W;
  if (i >= rw) { return; }
  let j = i / p.W;
  let w = i % p.W;
  var s = 0.0;
  for (var b = 0u; b < p.B; b++) {
    s += b_dout[b * rw + i];
  }
  b_dz[j * p.F + p.off + w] += s;
}
