// LayerNorm over the last dimension with weight and bias (nn.LayerNorm).
// Legend: R rows (all leading dims flattened), C channels.
//
//   forward:  mu[r]   = mean_c x[r,c]
//             rstd[r] = 1 / sqrt(mean_c (x[r,c] - mu[r])^2 + eps)     (biased variance, as torch)
//             xh      = (x - mu) * rstd
//             y[r,c]  = xh[r,c] * w[c] + b[c]
//   backward: with g = dy * w,
//             dx[r,c] += rstd[r] * (g[r,c] - mean_c g[r,:] - xh[r,c] * mean_c (g * xh)[r,:])
//             dw[c]   += sum_r dy[r,c] * xh[r,c]
//             db[c]   += sum_r dy[r,c]
//
// The forward keeps mu and rstd (one f32 each per row). The variance is taken
// around the mean (two passes over the row), not as E[x^2] - mu^2, which
// cancels badly when |mu| >> std. Short rows (C <= 256, chosen on the host)
// run one thread per row with no barriers (cheap on SwiftShader, where a
// barrier costs ~1 us per thread); long rows one workgroup per row with a tree
// reduction in workgroup memory (WG a power of two, a pipeline constant).
// dw and db are reduced over rows without float atomics, deterministically:
// per (chunk of rows, column) partial sums, then a fixed-order sum of chunks;
// with one chunk the partial kernel accumulates into dw and db directly.

struct Params {
  rows: u32, C: u32, eps: f32, rowsPerChunk: u32,
  nChunks: u32, direct: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

fn reduce_sum(lid: u32) -> f32 {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

// ---- forward: x (R,C), w (C), b (C) -> y (R,C), mu (R), rstd (R) ----------------------

@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read> f_w: array<f32>;
@group(0) @binding(3) var<storage, read> f_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(5) var<storage, read_write> f_mu: array<f32>;
@group(0) @binding(6) var<storage, read_write> f_rstd: array<f32>;

@compute @workgroup_size(64)
fn layernorm_forward_row(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = gid.x + gid.y * nwg.x * 64u;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  var s = 0.0;
  for (var c = 0u; c < p.C; c++) { s += f_x[base + c]; }
  let mu = s / f32(p.C);
  var ss = 0.0;
  for (var c = 0u; c < p.C; c++) {
    let d = f_x[base + c] - mu;
    ss += d * d;
  }
  let r = inverseSqrt(ss / f32(p.C) + p.eps);
  for (var c = 0u; c < p.C; c++) {
    f_y[base + c] = (f_x[base + c] - mu) * r * f_w[c] + f_b[c];
  }
  f_mu[row] = mu;
  f_rstd[row] = r;
}

@compute @workgroup_size(WG)
fn layernorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  var s = 0.0;
  for (var c = lid; c < p.C; c += WG) { s += f_x[base + c]; }
  red[lid] = s;
  let mu = reduce_sum(lid) / f32(p.C);
  var ss = 0.0;
  for (var c = lid; c < p.C; c += WG) {
    let d = f_x[base + c] - mu;
    ss += d * d;
  }
  red[lid] = ss;
  let r = inverseSqrt(reduce_sum(lid) / f32(p.C) + p.eps);
  for (var c = lid; c < p.C; c += WG) {
    f_y[base + c] = (f_x[base + c] - mu) * r * f_w[c] + f_b[c];
  }
  if (lid == 0u) {
    f_mu[row] = mu;
    f_rstd[row] = r;
  }
}

// ---- backward dx: dy, x, w, mu, rstd -> dx (accumulated) -----------------------------------

@group(0) @binding(1) var<storage, read> b_dy: array<f32>;
@group(0) @binding(2) var<storage, read> b_x: array<f32>;
@group(0) @binding(3) var<storage, read> b_w: array<f32>;
@group(0) @binding(4) var<storage, read> b_mu: array<f32>;
@group(0) @binding(5) var<storage, read> b_rstd: array<f32>;
@group(0) @binding(6) var<storage, read_write> b_dx: array<f32>;

@compute @workgroup_size(64)
fn layernorm_backward_row(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = gid.x + gid.y * nwg.x * 64u;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  let mu = b_mu[row];
  let r = b_rstd[row];
  var sg = 0.0;
  var sgx = 0.0;
  for (var c = 0u; c < p.C; c++) {
    let g = b_dy[base + c] * b_w[c];
    sg += g;
    sgx += g * (b_x[base + c] - mu) * r;
  }
  let mg = sg / f32(p.C);
  let mgx = sgx / f32(p.C);
  for (var c = 0u; c < p.C; c++) {
    let i = base + c;
    let xh = (b_x[i] - mu) * r;
    b_dx[i] += r * (b_dy[i] * b_w[c] - mg - xh * mgx);
  }
}

@compute @workgroup_size(WG)
fn layernorm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  let mu = b_mu[row];
  let r = b_rstd[row];
  var sg = 0.0;
  var sgx = 0.0;
  for (var c = lid; c < p.C; c += WG) {
    let g = b_dy[base + c] * b_w[c];
    sg += g;
    sgx += g * (b_x[base + c] - mu) * r;
  }
  red[lid] = sg;
  let mg = reduce_sum(lid) / f32(p.C);
  red[lid] = sgx;
  let mgx = reduce_sum(lid) / f32(p.C);
  for (var c = lid; c < p.C; c += WG) {
    let i = base + c;
    let xh = (b_x[i] - mu) * r;
    b_dx[i] += r * (b_dy[i] * b_w[c] - mg - xh * mgx);
  }
}

// ---- backward dw, db, stage 1: per (chunk of rows, column) partial sums -----------------

@group(0) @binding(1) var<storage, read> d_dy: array<f32>;
@group(0) @binding(2) var<storage, read> d_x: array<f32>;
@group(0) @binding(3) var<storage, read> d_mu: array<f32>;
@group(0) @binding(4) var<storage, read> d_rstd: array<f32>;
// partial_w[chunk, c] / partial_b[chunk, c], or dw[c] / db[c] themselves (accumulated) when p.direct == 1.
@group(0) @binding(5) var<storage, read_write> d_w: array<f32>;
@group(0) @binding(6) var<storage, read_write> d_b: array<f32>;

@compute @workgroup_size(64)
fn layernorm_backward_params_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  let chunk = gid.y;
  if (c >= p.C || chunk >= p.nChunks) { return; }
  let r0 = chunk * p.rowsPerChunk;
  let r1 = min(r0 + p.rowsPerChunk, p.rows);
  var sw = 0.0;
  var sb = 0.0;
  for (var r = r0; r < r1; r++) {
    let i = r * p.C + c;
    let dy = d_dy[i];
    sw += dy * (d_x[i] - d_mu[r]) * d_rstd[r];
    sb += dy;
  }
  if (p.direct == 1u) {
    d_w[c] += sw;
    d_b[c] += sb;
  } else {
    d_w[chunk * p.C + c] = sw;
    d_b[chunk * p.C + c] = sb;
  }
}

// ---- backward dw, db, stage 2: sum the chunks per column, in order -----------------------

@group(0) @binding(1) var<storage, read> s_pw: array<f32>;
@group(0) @binding(2) var<storage, read> s_pb: array<f32>;
@group(0) @binding(3) var<storage, read_write> s_dw: array<f32>;
@group(0) @binding(4) var<storage, read_write> s_db: array<f32>;

@compute @workgroup_size(64)
fn layernorm_backward_params_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.C) { return; }
  var sw = 0.0;
  var sb = 0.0;
  for (var k = 0u; k < p.nChunks; k++) {
    sw += s_pw[k * p.C + c];
    sb += s_pb[k * p.C + c];
  }
  s_dw[c] += sw;
  s_db[c] += sb;
}
