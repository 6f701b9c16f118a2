// RMSNorm over the last dimension (Zhang & Sennrich 2019), llm.c style.
// Legend: R rows (all leading dims flattened), C channels.
//
//   forward:  rstd[r] = 1 / sqrt(mean_c(x[r,c]^2) + eps)
//             y[r,c]  = x[r,c] * rstd[r] * w[c]
//   backward: with g[r,c] = dy[r,c] * w[c] and a[r] = sum_c g[r,c] * x[r,c],
//             dx[r,c] += rstd[r] * g[r,c] - x[r,c] * rstd[r]^3 * a[r] / C
//             dw[c]   += sum_r dy[r,c] * x[r,c] * rstd[r]
//
// The forward keeps rstd (one f32 per row) for the backward. Forward and dx
// run one workgroup per row with a tree reduction in workgroup memory; WG is a
// pipeline constant (a power of two, 32..256) picked from C so that short rows
// do not idle most of a 256-wide workgroup. dw is a reduction over rows done
// without float atomics, deterministically: rmsnorm_backward_dw_partial sums a
// chunk of rows per column (one thread per (chunk, column)), then
// rmsnorm_backward_dw_reduce sums the chunks per column in a fixed order. With
// one chunk the partial kernel accumulates into dw directly.

struct Params {
  rows: u32, C: u32, eps: f32, rowsPerChunk: u32,
  nChunks: u32, direct: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

// Tree reduction of red[0..WG) into red[0]; every thread of the workgroup calls it.
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

// ---- forward: x (R,C), w (C) -> y (R,C), rstd (R) ------------------------------

@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read> f_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(4) var<storage, read_write> f_rstd: array<f32>;

@compute @workgroup_size(WG)
fn rmsnorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  var ss = 0.0;
  for (var c = lid; c < p.C; c += WG) {
    let v = f_x[base + c];
    ss += v * v;
  }
  red[lid] = ss;
  let r = inverseSqrt(reduce_sum(lid) / f32(p.C) + p.eps);
  for (var c = lid; c < p.C; c += WG) {
    f_y[base + c] = f_x[base + c] * r * f_w[c];
  }
  if (lid == 0u) { f_rstd[row] = r; }
}

// ---- backward dx: dy, x, w, rstd -> dx (accumulated) -----------------------------

@group(0) @binding(1) var<storage, read> b_dy: array<f32>;
@group(0) @binding(2) var<storage, read> b_x: array<f32>;
@group(0) @binding(3) var<storage, read> b_w: array<f32>;
@group(0) @binding(4) var<storage, read> b_rstd: array<f32>;
@group(0) @binding(5) var<storage, read_write> b_dx: array<f32>;

@compute @workgroup_size(WG)
fn rmsnorm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  var acc = 0.0;
  for (var c = lid; c < p.C; c += WG) {
    acc += b_dy[base + c] * b_w[c] * b_x[base + c];
  }
  red[lid] = acc;
  let a = reduce_sum(lid);
  let r = b_rstd[row];
  let k = r * r * r * a / f32(p.C);
  for (var c = lid; c < p.C; c += WG) {
    let i = base + c;
    b_dx[i] += r * b_dy[i] * b_w[c] - b_x[i] * k;
  }
}

// ---- backward dw, stage 1: per (chunk of rows, column) partial sums ---------------

@group(0) @binding(1) var<storage, read> d_dy: array<f32>;
@group(0) @binding(2) var<storage, read> d_x: array<f32>;
@group(0) @binding(3) var<storage, read> d_rstd: array<f32>;
// partial[chunk, c], or dw[c] itself (accumulated) when p.direct == 1.
@group(0) @binding(4) var<storage, read_write> d_out: array<f32>;

@compute @workgroup_size(64)
fn rmsnorm_backward_dw_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  let chunk = gid.y;
  if (c >= p.C || chunk >= p.nChunks) { return; }
  let r0 = chunk * p.rowsPerChunk;
  let r1 = min(r0 + p.rowsPerChunk, p.rows);
  var s = 0.0;
  for (var r = r0; r < r1; r++) {
    let i = r * p.C + c;
    s += d_dy[i] * d_x[i] * d_rstd[r];
  }
  if (p.direct == 1u) { d_out[c] += s; } else { d_out[chunk * p.C + c] = s; }
}

// ---- backward dw, stage 2: dw[c] += sum_chunk partial[chunk, c] ---------------------

@group(0) @binding(1) var<storage, read> s_partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> s_dw: array<f32>;

@compute @workgroup_size(64)
fn rmsnorm_backward_dw_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.C) { return; }
  var s = 0.0;
  for (var k = 0u; k < p.nChunks; k++) { s += s_partial[k * p.C + c]; }
  s_dw[c] += s;
}

// ---- v2: one thread per row, no workgroup memory, no barriers ------------------------
// For short rows (C <= 256, chosen on the host). On CPU Vulkan (SwiftShader) a
// workgroup barrier costs ~1 us per thread, so the tree reduction above
// (log2(WG) + 2 barriers per row) dominated: 512 rows x 64 took ~25 ms, this
// takes well under 1 ms. On real GPUs short rows are cheap either way. Same
// bindings and math as v1; x is read twice (sum of squares, then scale).

@compute @workgroup_size(64)
fn rmsnorm_forward_row(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = gid.x + gid.y * nwg.x * 64u;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  var ss = 0.0;
  for (var c = 0u; c < p.C; c++) {
    let v = f_x[base + c];
    ss += v * v;
  }
  let r = inverseSqrt(ss / f32(p.C) + p.eps);
  for (var c = 0u; c < p.C; c++) {
    f_y[base + c] = f_x[base + c] * r * f_w[c];
  }
  f_rstd[row] = r;
}

@compute @workgroup_size(64)
fn rmsnorm_backward_row(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = gid.x + gid.y * nwg.x * 64u;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  var a = 0.0;
  for (var c = 0u; c < p.C; c++) {
    a += b_dy[base + c] * b_w[c] * b_x[base + c];
  }
  let r = b_rstd[row];
  let k = r * r * r * a / f32(p.C);
  for (var c = 0u; c < p.C; c++) {
    let i = base + c;
    b_dx[i] += r * b_dy[i] * b_w[c] - b_x[i] * k;
  }
}
