// DoRA (weight-decomposed LoRA, METHODS.md §6) kernels.
//
// Per targeted linear W [O, I] with LoRA A [R, I], B [O, R], scale s and a
// trained magnitude m [O]:
//   n_o = ‖W_o + s (BA)_o‖₂   (detached: no gradient flows through n)
//   g_o = m_o / n_o
//
// dora_row_sqnorm:  w2[o] = Σ_i W[o,i]²                       (once, W is frozen)
// dora_norm:        n[o]  = sqrt(w2[o] + 2s B_o·C[:,o] + s² B_o G B_oᵀ)
//                   with C = A Wᵀ [R, O] and G = A Aᵀ [R, R] (matmuls done
//                   beforehand), i.e. ‖W_o + s B_o A‖² expanded so that the
//                   [O, I] product BA is never formed.
// dora_scale_forward (every output element t,o of a [M, O] activation):
//   y = Rr + (g − 1)(U − β) + g V
//   case A (no dropout / eval): Rr = U = 0, V = x Wᵀ + b + s·xAᵀBᵀ, β = b
//            → y = b + g (x Wᵀ + s·xAᵀBᵀ)
//   case B (dropout):  Rr = x Wᵀ + b, U = x_d Wᵀ, V = s·x_d AᵀBᵀ, β = 0
// Backward: dRr += dy, dU += (g − 1) dy, dV += g dy (dora_scale_backward_x),
//           dm[o] += Σ_t dy (U − β + V) / n_o    (dora_scale_backward_m).
// dora_scale_rows (merge): W[o,i] *= m[o] / n[o].
//
// Elementwise kernels: 256 threads, 2-D grid (i = gid.x + gid.y·nwg.x·256).
// Per-row kernels: 64 threads, one output feature per thread, no barriers
// (cheap on SwiftShader, coalesced over o on GPUs where the inner loop walks rows).

struct Params {
  n: u32,        // elements (elementwise) or O (per-feature kernels)
  cols: u32,     // O for elementwise kernels; I for row kernels
  rows: u32,     // M (tokens) for dora_scale_backward_m; R for dora_norm
  flags: u32,    // bit 0: has Rr, bit 1: has U, bit 2: has bias; mode for backward_x
  s: f32,
  _p0: u32,
  _p1: u32,
  _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn flatIndex(gid: vec3<u32>, nwg: vec3<u32>, wg: u32) -> u32 {
  return gid.x + gid.y * nwg.x * wg;
}

// ---- dora_row_sqnorm: bindings W (read), w2 (write) --------------------------------------
@group(0) @binding(1) var<storage, read> rs_w: array<f32>;
@group(0) @binding(2) var<storage, read_write> rs_out: array<f32>;

@compute @workgroup_size(64)
fn dora_row_sqnorm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flatIndex(gid, nwg, 64u);
  if (o >= p.n) { return; }
  var acc = 0.0;
  let base = o * p.cols;
  for (var i = 0u; i < p.cols; i++) {
    let w = rs_w[base + i];
    acc += w * w;
  }
  rs_out[o] = acc;
}

// ---- dora_norm: bindings w2, B [O,R], C [R,O], G [R,R] (read), n (write) -----------------
@group(0) @binding(1) var<storage, read> nm_w2: array<f32>;
@group(0) @binding(2) var<storage, read> nm_b: array<f32>;
@group(0) @binding(3) var<storage, read> nm_c: array<f32>;
@group(0) @binding(4) var<storage, read> nm_g: array<f32>;
@group(0) @binding(5) var<storage, read_write> nm_out: array<f32>;

@compute @workgroup_size(64)
fn dora_norm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flatIndex(gid, nwg, 64u);
  if (o >= p.n) { return; }
  let R = p.rows;
  let O = p.n;
  var cross = 0.0;   // B_o · C[:, o]
  var quad = 0.0;    // B_o G B_oᵀ
  for (var j = 0u; j < R; j++) {
    let bj = nm_b[o * R + j];
    cross += bj * nm_c[j * O + o];
    var gb = 0.0;
    for (var k = 0u; k < R; k++) {
      gb += nm_g[j * R + k] * nm_b[o * R + k];
    }
    quad += bj * gb;
  }
  let sq = nm_w2[o] + 2.0 * p.s * cross + p.s * p.s * quad;
  nm_out[o] = sqrt(max(sq, 0.0));
}

// ---- dora_scale_forward: bindings V, m, n, Rr, U, bias (read), y (write) -----------------
@group(0) @binding(1) var<storage, read> sf_v: array<f32>;
@group(0) @binding(2) var<storage, read> sf_m: array<f32>;
@group(0) @binding(3) var<storage, read> sf_n: array<f32>;
@group(0) @binding(4) var<storage, read> sf_r: array<f32>;
@group(0) @binding(5) var<storage, read> sf_u: array<f32>;
@group(0) @binding(6) var<storage, read> sf_bias: array<f32>;
@group(0) @binding(7) var<storage, read_write> sf_y: array<f32>;

@compute @workgroup_size(256)
fn dora_scale_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatIndex(gid, nwg, 256u);
  if (i >= p.n) { return; }
  let o = i % p.cols;
  let g = sf_m[o] / sf_n[o];
  var u = 0.0;
  if ((p.flags & 2u) != 0u) { u = sf_u[i]; }
  if ((p.flags & 4u) != 0u) { u -= sf_bias[o]; }
  var y = (g - 1.0) * u + g * sf_v[i];
  if ((p.flags & 1u) != 0u) { y += sf_r[i]; }
  sf_y[i] = y;
}

// ---- dora_scale_backward_x: bindings dy, m, n (read), dx (read_write) --------------------
// flags 0: dx += g dy (into V);  flags 1: dx += (g − 1) dy (into U).
@group(0) @binding(1) var<storage, read> bx_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bx_m: array<f32>;
@group(0) @binding(3) var<storage, read> bx_n: array<f32>;
@group(0) @binding(4) var<storage, read_write> bx_dx: array<f32>;

@compute @workgroup_size(256)
fn dora_scale_backward_x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatIndex(gid, nwg, 256u);
  if (i >= p.n) { return; }
  let o = i % p.cols;
  var coef = bx_m[o] / bx_n[o];
  if (p.flags == 1u) { coef -= 1.0; }
  bx_dx[i] += coef * bx_dy[i];
}

// ---- dora_scale_backward_m: bindings dy, V, U, bias, n (read), dm (read_write) -----------
@group(0) @binding(1) var<storage, read> bm_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bm_v: array<f32>;
@group(0) @binding(3) var<storage, read> bm_u: array<f32>;
@group(0) @binding(4) var<storage, read> bm_bias: array<f32>;
@group(0) @binding(5) var<storage, read> bm_n: array<f32>;
@group(0) @binding(6) var<storage, read_write> bm_dm: array<f32>;

@compute @workgroup_size(64)
fn dora_scale_backward_m(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flatIndex(gid, nwg, 64u);
  let O = p.cols;
  if (o >= O) { return; }
  var beta = 0.0;
  if ((p.flags & 4u) != 0u) { beta = bm_bias[o]; }
  let hasU = (p.flags & 2u) != 0u;
  var acc = 0.0;
  for (var t = 0u; t < p.rows; t++) {
    let i = t * O + o;
    var z = bm_v[i] - beta;
    if (hasU) { z += bm_u[i]; }
    acc += bm_dy[i] * z;
  }
  bm_dm[o] += acc / bm_n[o];
}

// ---- dora_scale_rows (merge): bindings m, n (read), W (read_write) -----------------------
@group(0) @binding(1) var<storage, read> sr_m: array<f32>;
@group(0) @binding(2) var<storage, read> sr_n: array<f32>;
@group(0) @binding(3) var<storage, read_write> sr_w: array<f32>;

@compute @workgroup_size(256)
fn dora_scale_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatIndex(gid, nwg, 256u);
  if (i >= p.n) { return; }
  let o = i / p.cols;
  sr_w[i] *= sr_m[o] / sr_n[o];
}
