// Attention v2: register blocks of rows, no workgroup memory, no barriers. Same
// layouts, masking rule, params, bindings and outputs as attention.wgsl (read
// its header for the math); chosen on the host for small heads and short
// sequences (see attention.ts), where the tiled kernels spend their time in
// barriers: on SwiftShader a workgroup barrier costs ~1 us per thread, and at
// D = 8, T = 64 a tile holds too little work to pay for them.
//
//   forward: one thread per RR query rows of one kv head (the rows (i, h) of
//            kv head g, ordered by i then h, in blocks of RR), so each K/V load
//            feeds RR rows; online softmax over the visible keys with one exp
//            per key (x <= m: alpha = 1, p = exp(x - m); x > m: alpha = exp(m - x), p = 1).
//   dq:      the same row blocks: dq_i = scale sum_s p_is (dO_i . v_s - Delta_i) k_s.
//   dkdv:    one thread per RK consecutive keys of one kv head, looping over the
//            G query heads and the queries that see them, in a fixed order:
//            every gradient element has one writer (deterministic, no atomics).
// Delta_i = dO_i . O_i comes from attention.wgsl's attention_backward_delta.
//
// On SwiftShader every storage load costs ~10 ns per invocation (each lane
// gathers with bounds checks) and private arrays indexed in loops are not
// promoted to registers, so rows live in named struct fields and each load is
// shared by a block of rows; divergent branches run under lane masks, so the
// per-row updates are branch-free selects. Measured at B 8, T 64, Hq 8, Hkv 4,
// D 8, forward: one row per thread with array registers 13.7 ms, named
// registers 8.4 ms, RR = 2: 6.9 ms, RR = 4: 6.1 ms, branch-free: -17%
// (tiled attention.wgsl: ~25 ms).
//
// D is 4 or 8 (checked on the host): a row is two vec4 registers, the second
// zero when D = 4.

struct Params {
  B: u32, T: u32, S: u32, Hq: u32,
  Hkv: u32, P: u32, qo: i32, hasMask: u32,
  scale: f32, writeK: u32, writeV: u32, _p0: u32,
}

override D: u32 = 8u;
const RR: u32 = 4u;
const RK: u32 = 4u;
const NEG: f32 = -1.0e30;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> Q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> K: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> V: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> mask: array<i32>;

// forward
@group(0) @binding(5) var<storage, read_write> O: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;

// backward
@group(0) @binding(5) var<storage, read> dO: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> statsR: array<f32>;
@group(0) @binding(7) var<storage, read_write> dQ: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> dK: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> dV: array<vec4<f32>>;

fn visible(b: u32, i: u32, s: u32) -> bool {
  if (p.hasMask == 1u && mask[b * p.S + s] == 0) { return false; }
  return s < p.P || i32(s) <= p.qo + i32(i);
}

// Keys at or past this index are invisible to query i: max(P, qo + i + 1), clamped to [0, S].
fn keyEnd(i: u32) -> u32 {
  return u32(clamp(max(i32(p.P), p.qo + i32(i) + 1), 0, i32(p.S)));
}

// Flat thread index over a grid1d-shaped dispatch of 64-thread workgroups.
fn flatIndex(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * 64u; }

// Load the vec4 pair of row `r` (in units of D floats) of a Q-shaped or K-shaped buffer.
fn ldQ(r: u32) -> mat2x4<f32> {
  if (D > 4u) { return mat2x4<f32>(Q[2u * r], Q[2u * r + 1u]); }
  return mat2x4<f32>(Q[r], vec4<f32>(0.0));
}
fn ldK(r: u32) -> mat2x4<f32> {
  if (D > 4u) { return mat2x4<f32>(K[2u * r], K[2u * r + 1u]); }
  return mat2x4<f32>(K[r], vec4<f32>(0.0));
}
fn ldV(r: u32) -> mat2x4<f32> {
  if (D > 4u) { return mat2x4<f32>(V[2u * r], V[2u * r + 1u]); }
  return mat2x4<f32>(V[r], vec4<f32>(0.0));
}
fn ldO(r: u32) -> mat2x4<f32> {
  if (D > 4u) { return mat2x4<f32>(dO[2u * r], dO[2u * r + 1u]); }
  return mat2x4<f32>(dO[r], vec4<f32>(0.0));
}
fn dot8(a: mat2x4<f32>, b: mat2x4<f32>) -> f32 { return dot(a[0], b[0]) + dot(a[1], b[1]); }

// Query-row block of thread t: rows j0..j0+RR-1 of kv head g of batch b,
// row j being query i = j / G of head g * G + j % G.
struct RowBlock { b: u32, g: u32, G: u32, j0: u32, nRows: u32, valid: bool }
fn rowBlock(t: u32) -> RowBlock {
  let G = p.Hq / p.Hkv;
  let nRows = p.T * G;
  let nBlk = (nRows + RR - 1u) / RR;
  var rb: RowBlock;
  rb.valid = t < p.B * p.Hkv * nBlk;
  rb.G = G;
  rb.nRows = nRows;
  rb.j0 = (t % nBlk) * RR;
  rb.g = (t / nBlk) % p.Hkv;
  rb.b = t / (nBlk * p.Hkv);
  return rb;
}
// Flat query row (b, i, h) of block row j (clamped to the last row; callers mask stores).
fn blockRow(rb: RowBlock, j: u32) -> u32 {
  let jj = min(j, rb.nRows - 1u);
  return (rb.b * p.T + jj / rb.G) * p.Hq + rb.g * rb.G + jj % rb.G;
}
// Last visible non-masked key index of query i: keys s <= lim (and s < S) are visible.
fn keyLimit(i: u32) -> i32 { return max(i32(p.P) - 1, p.qo + i32(i)); }

// ---- forward ------------------------------------------------------------------------
struct FRow { q: mat2x4<f32>, acc: mat2x4<f32>, m: f32, l: f32, lim: i32, row: u32 }

fn frowInit(rb: RowBlock, j: u32) -> FRow {
  var r: FRow;
  r.row = blockRow(rb, j);
  r.q = ldQ(r.row) * p.scale;
  r.acc = mat2x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0));
  r.m = NEG;
  r.l = 0.0;
  r.lim = keyLimit(min(j, rb.nRows - 1u) / rb.G);
  return r;
}

fn frowStep(r: ptr<function, FRow>, s: u32, k: mat2x4<f32>, v: mat2x4<f32>) {
  // Branch-free (SwiftShader runs divergent branches under masks): an
  // invisible key gets alpha = 1, p = 0 and leaves m alone.
  let vis = i32(s) <= (*r).lim;
  let m = (*r).m;
  let x = dot8((*r).q, k);
  let e = exp(-abs(x - m));
  let up = x > m;
  let alpha = select(1.0, select(1.0, e, up), vis);
  let pr = select(0.0, select(e, 1.0, up), vis);
  (*r).m = select(m, max(m, x), vis);
  (*r).l = (*r).l * alpha + pr;
  (*r).acc = (*r).acc * alpha + v * pr;
}

fn frowStore(r: FRow) {
  let o = r.acc * select(0.0, 1.0 / r.l, r.l > 0.0);
  if (D > 4u) { O[2u * r.row] = o[0]; O[2u * r.row + 1u] = o[1]; } else { O[r.row] = o[0]; }
  stats[2u * r.row] = select(0.0, r.m + log(r.l), r.l > 0.0);
}

@compute @workgroup_size(64)
fn attention_forward_row(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let rb = rowBlock(flatIndex(gid, nwg));
  if (!rb.valid) { return; }
  var r0 = frowInit(rb, rb.j0);
  var r1 = frowInit(rb, rb.j0 + 1u);
  var r2 = frowInit(rb, rb.j0 + 2u);
  var r3 = frowInit(rb, rb.j0 + 3u);
  let kEnd = keyEnd((min(rb.j0 + RR, rb.nRows) - 1u) / rb.G);
  for (var s = 0u; s < kEnd; s++) {
    if (p.hasMask == 1u && mask[rb.b * p.S + s] == 0) { continue; }
    let kr = (rb.b * p.S + s) * p.Hkv + rb.g;
    let k = ldK(kr);
    let v = ldV(kr);
    frowStep(&r0, s, k, v);
    frowStep(&r1, s, k, v);
    frowStep(&r2, s, k, v);
    frowStep(&r3, s, k, v);
  }
  frowStore(r0);
  if (rb.j0 + 1u < rb.nRows) { frowStore(r1); }
  if (rb.j0 + 2u < rb.nRows) { frowStore(r2); }
  if (rb.j0 + 3u < rb.nRows) { frowStore(r3); }
}

// ---- backward dq ----------------------------------------------------------------------
struct QRow { q: mat2x4<f32>, dout: mat2x4<f32>, acc: mat2x4<f32>, L: f32, delta: f32, lim: i32, row: u32 }

fn qrowInit(rb: RowBlock, j: u32) -> QRow {
  var r: QRow;
  r.row = blockRow(rb, j);
  r.q = ldQ(r.row) * p.scale;
  r.dout = ldO(r.row);
  r.acc = mat2x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0));
  r.L = statsR[2u * r.row];
  r.delta = statsR[2u * r.row + 1u];
  r.lim = keyLimit(min(j, rb.nRows - 1u) / rb.G);
  return r;
}

fn qrowStep(r: ptr<function, QRow>, s: u32, k: mat2x4<f32>, v: mat2x4<f32>) {
  // Branch-free; select (not a product) drops an invisible pair's exp, which may be inf.
  let pr = select(0.0, exp(dot8((*r).q, k) - (*r).L), i32(s) <= (*r).lim);
  (*r).acc += k * (pr * (dot8((*r).dout, v) - (*r).delta));
}

fn qrowStore(r: QRow) {
  let g = r.acc * p.scale;
  if (D > 4u) {
    dQ[2u * r.row] = dQ[2u * r.row] + g[0];
    dQ[2u * r.row + 1u] = dQ[2u * r.row + 1u] + g[1];
  } else {
    dQ[r.row] = dQ[r.row] + g[0];
  }
}

@compute @workgroup_size(64)
fn attention_backward_dq_row(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let rb = rowBlock(flatIndex(gid, nwg));
  if (!rb.valid) { return; }
  var r0 = qrowInit(rb, rb.j0);
  var r1 = qrowInit(rb, rb.j0 + 1u);
  var r2 = qrowInit(rb, rb.j0 + 2u);
  var r3 = qrowInit(rb, rb.j0 + 3u);
  let kEnd = keyEnd((min(rb.j0 + RR, rb.nRows) - 1u) / rb.G);
  for (var s = 0u; s < kEnd; s++) {
    if (p.hasMask == 1u && mask[rb.b * p.S + s] == 0) { continue; }
    let kr = (rb.b * p.S + s) * p.Hkv + rb.g;
    let k = ldK(kr);
    let v = ldV(kr);
    qrowStep(&r0, s, k, v);
    qrowStep(&r1, s, k, v);
    qrowStep(&r2, s, k, v);
    qrowStep(&r3, s, k, v);
  }
  qrowStore(r0);
  if (rb.j0 + 1u < rb.nRows) { qrowStore(r1); }
  if (rb.j0 + 2u < rb.nRows) { qrowStore(r2); }
  if (rb.j0 + 3u < rb.nRows) { qrowStore(r3); }
}

// ---- backward dk, dv --------------------------------------------------------------------
// Key s is seen by query i iff i >= need (need = T: by none).
struct KRow { k: mat2x4<f32>, v: mat2x4<f32>, dk: mat2x4<f32>, dv: mat2x4<f32>, need: u32, krow: u32, valid: bool }

fn krowInit(b: u32, g: u32, s: u32) -> KRow {
  var r: KRow;
  r.valid = s < p.S;
  let ss = min(s, p.S - 1u);
  r.krow = (b * p.S + ss) * p.Hkv + g;
  r.k = ldK(r.krow) * p.scale;
  r.v = ldV(r.krow);
  r.dk = mat2x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0));
  r.dv = r.dk;
  r.need = 0u;
  if (ss >= p.P) { r.need = u32(clamp(i32(ss) - p.qo, 0, i32(p.T))); }
  if (!r.valid || (p.hasMask == 1u && mask[b * p.S + ss] == 0)) { r.need = p.T; }
  return r;
}

fn krowStep(r: ptr<function, KRow>, i: u32, q: mat2x4<f32>, dout: mat2x4<f32>, L: f32, delta: f32) {
  let pr = select(0.0, exp(dot8(q, (*r).k) - L), i >= (*r).need);
  let ds = pr * (dot8(dout, (*r).v) - delta);
  (*r).dv += dout * pr;
  (*r).dk += q * ds;
}

fn krowStore(r: KRow) {
  if (!r.valid) { return; }
  let dk = r.dk * p.scale;
  if (D > 4u) {
    if (p.writeK == 1u) { dK[2u * r.krow] = dK[2u * r.krow] + dk[0]; dK[2u * r.krow + 1u] = dK[2u * r.krow + 1u] + dk[1]; }
    if (p.writeV == 1u) { dV[2u * r.krow] = dV[2u * r.krow] + r.dv[0]; dV[2u * r.krow + 1u] = dV[2u * r.krow + 1u] + r.dv[1]; }
  } else {
    if (p.writeK == 1u) { dK[r.krow] = dK[r.krow] + dk[0]; }
    if (p.writeV == 1u) { dV[r.krow] = dV[r.krow] + r.dv[0]; }
  }
}

@compute @workgroup_size(64)
fn attention_backward_dkdv_row(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = flatIndex(gid, nwg);
  let nBlk = (p.S + RK - 1u) / RK;
  if (t >= p.B * p.Hkv * nBlk) { return; }
  let s0 = (t % nBlk) * RK;
  let g = (t / nBlk) % p.Hkv;
  let b = t / (nBlk * p.Hkv);
  let G = p.Hq / p.Hkv;
  var r0 = krowInit(b, g, s0);
  var r1 = krowInit(b, g, s0 + 1u);
  var r2 = krowInit(b, g, s0 + 2u);
  var r3 = krowInit(b, g, s0 + 3u);
  let iStart = min(min(r0.need, r1.need), min(r2.need, r3.need));
  for (var hh = 0u; hh < G; hh++) {
    for (var i = iStart; i < p.T; i++) {
      let row = (b * p.T + i) * p.Hq + g * G + hh;
      let q = ldQ(row);
      let dout = ldO(row);
      let L = statsR[2u * row];
      let delta = statsR[2u * row + 1u];
      krowStep(&r0, i, q, dout, L, delta);
      krowStep(&r1, i, q, dout, L, delta);
      krowStep(&r2, i, q, dout, L, delta);
      krowStep(&r3, i, q, dout, L, delta);
    }
  }
  krowStore(r0);
  krowStore(r1);
  krowStore(r2);
  krowStore(r3);
}
