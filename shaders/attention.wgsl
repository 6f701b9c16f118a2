// Causal grouped-query self-attention (HF LLaMA eager semantics), flash-attention style.
//
// Legend: B batch, T queries, S keys, Hq query heads, Hkv key/value heads,
// D head dim, G = Hq / Hkv query heads per kv head, P prefix keys, qo the
// absolute key index of query 0 (queryOffset). Layouts, row-major:
//   Q, O, dO [B, T, Hq, D];  K, V [B, S, Hkv, D];  mask [B, S] (i32, 1 = attend)
//   stats [B, T, Hq, 2]: stats[.., 0] = logsumexp of the scaled scores of the
//   row (forward), stats[.., 1] = Delta = dO . O (backward).
// Query head h reads kv head h / G.
//
// Masking rule: query i sees key s iff
//     mask[b, s] != 0  and  (s < P  or  s <= qo + i).
// The first P keys (prefix-tuning prefixes) are visible to every query; the
// rest are causal with query i at absolute key position qo + i.
//
// Forward, for each row (b, i, h), scores x_s = scale * q_i . k_s over visible s:
//   L = logsumexp_s x_s,  p_s = exp(x_s - L),  o_i = sum_s p_s v_s
// computed with the online softmax (running max m, running sum l, rescale the
// accumulator by exp(m_old - m_new) per key tile). A row with no visible key
// gets o = 0 and L = 0 (its backward sees no visible key either, so L is unused).
//
// Backward (FlashAttention-2, P recomputed from L), with Delta_i = dO_i . o_i:
//   dv_s  = sum_i p_is dO_i
//   dp_is = dO_i . v_s,   ds_is = p_is (dp_is - Delta_i)
//   dq_i  = scale * sum_s ds_is k_s
//   dk_s  = scale * sum_i ds_is q_i
// dq: one workgroup per query block; dk, dv: one workgroup per key block, which
// loops over the G query heads of its kv head, so every gradient element has
// exactly one writer (deterministic, no atomics). All gradients accumulate.
//
// Tiling: D (head dim), BQ (queries per tile), BK (keys per tile) are pipeline
// override constants chosen on the host to fit the workgroup memory limit (see
// attention.ts), and so is WG, the threads per workgroup (256, or 64 for small
// tiles). Threads walk each tile with strided loops; each thread owns at most
// ACC = 8 accumulator entries of a BQ x D (or BK x D) tile, so BQ * D <= 8 WG
// (resp. BK * D) and D <= 128.

struct Params {
  B: u32, T: u32, S: u32, Hq: u32,
  Hkv: u32, P: u32, qo: i32, hasMask: u32,
  scale: f32, writeK: u32, writeV: u32, _p0: u32,
}

override D: u32 = 64u;
override BQ: u32 = 16u;
override BK: u32 = 16u;
override WG: u32 = 256u;
const ACC: u32 = 8u;
// Score of a masked key; real scores are far above it.
const NEG: f32 = -1.0e30;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<i32>;

// forward
@group(0) @binding(5) var<storage, read_write> O: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;

// backward (dq and dkdv)
@group(0) @binding(5) var<storage, read> dO: array<f32>;
@group(0) @binding(6) var<storage, read> statsR: array<f32>;
@group(0) @binding(7) var<storage, read_write> dQ: array<f32>;
@group(0) @binding(7) var<storage, read_write> dK: array<f32>;
@group(0) @binding(8) var<storage, read_write> dV: array<f32>;

var<workgroup> Qs: array<f32, BQ * D>;
var<workgroup> dOs: array<f32, BQ * D>;
var<workgroup> KVs: array<f32, BK * D>;
var<workgroup> Ks: array<f32, BK * D>;
var<workgroup> Vs: array<f32, BK * D>;
var<workgroup> Ss: array<f32, BQ * BK>;
var<workgroup> dSs: array<f32, BQ * BK>;
var<workgroup> rowM: array<f32, BQ>;
var<workgroup> rowL: array<f32, BQ>;
var<workgroup> rowA: array<f32, BQ>;
var<workgroup> rowLse: array<f32, BQ>;
var<workgroup> rowDelta: array<f32, BQ>;

fn visible(b: u32, i: u32, s: u32) -> bool {
  if (p.hasMask == 1u && mask[b * p.S + s] == 0) { return false; }
  return s < p.P || i32(s) <= p.qo + i32(i);
}

fn qIndex(b: u32, i: u32, h: u32, d: u32) -> u32 { return ((b * p.T + i) * p.Hq + h) * D + d; }
fn kIndex(b: u32, s: u32, g: u32, d: u32) -> u32 { return ((b * p.S + s) * p.Hkv + g) * D + d; }
fn rowIndex(b: u32, i: u32, h: u32) -> u32 { return (b * p.T + i) * p.Hq + h; }

// Keys at or past this index are invisible to queries i0..iLast: max(P, qo + iLast + 1), clamped to [0, S].
fn keyEnd(iLast: u32) -> u32 {
  return u32(clamp(max(i32(p.P), p.qo + i32(iLast) + 1), 0, i32(p.S)));
}

// ---- forward: one workgroup per (query block, query head, batch) ----------------
@compute @workgroup_size(WG)
fn attention_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let b = wg.z;
  let h = wg.y;
  let g = h / (p.Hq / p.Hkv);
  let i0 = wg.x * BQ;
  for (var e = tid; e < BQ * D; e += WG) {
    let i = i0 + e / D;
    var x = 0.0;
    if (i < p.T) { x = Q[qIndex(b, i, h, e % D)]; }
    Qs[e] = x;
  }
  if (tid < BQ) { rowM[tid] = NEG; rowL[tid] = 0.0; }
  // acc[k] is entry tid + k * WG of the BQ x D output tile.
  var acc: array<f32, ACC>;
  for (var k = 0u; k < ACC; k++) { acc[k] = 0.0; }
  let kEnd = keyEnd(min(i0 + BQ, p.T) - 1u);

  for (var s0 = 0u; s0 < kEnd; s0 += BK) {
    workgroupBarrier();
    for (var e = tid; e < BK * D; e += WG) {
      let s = s0 + e / D;
      var x = 0.0;
      if (s < p.S) { x = K[kIndex(b, s, g, e % D)]; }
      KVs[e] = x;
    }
    workgroupBarrier();
    // x = scale * q . k, or NEG where masked
    for (var e = tid; e < BQ * BK; e += WG) {
      let r = e / BK;
      let c = e % BK;
      let i = i0 + r;
      let s = s0 + c;
      var x = NEG;
      if (i < p.T && s < p.S && visible(b, i, s)) {
        var dot = 0.0;
        for (var d = 0u; d < D; d++) { dot += Qs[r * D + d] * KVs[c * D + d]; }
        x = dot * p.scale;
      }
      Ss[e] = x;
    }
    workgroupBarrier();
    // online softmax: m_new = max(m, max_c x_c); l = l exp(m - m_new) + sum_c exp(x_c - m_new).
    // Masked x stay at NEG and get p = 0; while no key was visible m = NEG and alpha = 1.
    if (tid < BQ) {
      let r = tid;
      var mt = NEG;
      for (var c = 0u; c < BK; c++) { mt = max(mt, Ss[r * BK + c]); }
      let mOld = rowM[r];
      let mNew = max(mOld, mt);
      let alpha = exp(mOld - mNew);
      var sum = 0.0;
      for (var c = 0u; c < BK; c++) {
        let x = Ss[r * BK + c];
        var pr = 0.0;
        if (x > NEG) { pr = exp(x - mNew); }
        Ss[r * BK + c] = pr;
        sum += pr;
      }
      rowM[r] = mNew;
      rowL[r] = rowL[r] * alpha + sum;
      rowA[r] = alpha;
    }
    workgroupBarrier();
    for (var e = tid; e < BK * D; e += WG) {
      let s = s0 + e / D;
      var x = 0.0;
      if (s < p.S) { x = V[kIndex(b, s, g, e % D)]; }
      KVs[e] = x;
    }
    workgroupBarrier();
    // acc = acc * alpha + P V
    for (var k = 0u; k < ACC; k++) {
      let e = tid + k * WG;
      if (e < BQ * D) {
        let r = e / D;
        let d = e % D;
        var a = acc[k] * rowA[r];
        for (var c = 0u; c < BK; c++) { a += Ss[r * BK + c] * KVs[c * D + d]; }
        acc[k] = a;
      }
    }
  }
  workgroupBarrier();

  for (var k = 0u; k < ACC; k++) {
    let e = tid + k * WG;
    if (e < BQ * D) {
      let r = e / D;
      let i = i0 + r;
      if (i < p.T) {
        let l = rowL[r];
        O[qIndex(b, i, h, e % D)] = select(0.0, acc[k] / l, l > 0.0);
      }
    }
  }
  if (tid < BQ) {
    let i = i0 + tid;
    if (i < p.T) {
      let l = rowL[tid];
      stats[2u * rowIndex(b, i, h)] = select(0.0, rowM[tid] + log(l), l > 0.0);
    }
  }
}

// ---- backward, step 1: Delta_i = dO_i . O_i, one thread per row ------------------
struct DeltaParams { rows: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> dp: DeltaParams;
@group(0) @binding(1) var<storage, read> Oin: array<f32>;
@group(0) @binding(2) var<storage, read> dOin: array<f32>;
@group(0) @binding(3) var<storage, read_write> statsD: array<f32>;

@compute @workgroup_size(64)
fn attention_backward_delta(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.x;
  if (row >= dp.rows) { return; }
  var s = 0.0;
  for (var d = 0u; d < D; d++) { s += dOin[row * D + d] * Oin[row * D + d]; }
  statsD[2u * row + 1u] = s;
}

// Load the query-side tiles of rows i0.. of head h: Q, dO, L and Delta.
fn loadQueryTiles(b: u32, h: u32, i0: u32, tid: u32) {
  for (var e = tid; e < BQ * D; e += WG) {
    let i = i0 + e / D;
    var x = 0.0;
    var y = 0.0;
    if (i < p.T) {
      let qi = qIndex(b, i, h, e % D);
      x = Q[qi];
      y = dO[qi];
    }
    Qs[e] = x;
    dOs[e] = y;
  }
  if (tid < BQ) {
    let i = i0 + tid;
    var l = 0.0;
    var delta = 0.0;
    if (i < p.T) {
      let row = rowIndex(b, i, h);
      l = statsR[2u * row];
      delta = statsR[2u * row + 1u];
    }
    rowLse[tid] = l;
    rowDelta[tid] = delta;
  }
}

// ---- backward, step 2: dq, one workgroup per (query block, query head, batch) ----
@compute @workgroup_size(WG)
fn attention_backward_dq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let b = wg.z;
  let h = wg.y;
  let g = h / (p.Hq / p.Hkv);
  let i0 = wg.x * BQ;
  loadQueryTiles(b, h, i0, tid);
  var acc: array<f32, ACC>;
  for (var k = 0u; k < ACC; k++) { acc[k] = 0.0; }
  let kEnd = keyEnd(min(i0 + BQ, p.T) - 1u);

  for (var s0 = 0u; s0 < kEnd; s0 += BK) {
    workgroupBarrier();
    for (var e = tid; e < BK * D; e += WG) {
      let s = s0 + e / D;
      var x = 0.0;
      if (s < p.S) { x = V[kIndex(b, s, g, e % D)]; }
      KVs[e] = x;
    }
    workgroupBarrier();
    // dp = dO . v
    for (var e = tid; e < BQ * BK; e += WG) {
      let r = e / BK;
      let c = e % BK;
      var dot = 0.0;
      for (var d = 0u; d < D; d++) { dot += dOs[r * D + d] * KVs[c * D + d]; }
      Ss[e] = dot;
    }
    workgroupBarrier();
    for (var e = tid; e < BK * D; e += WG) {
      let s = s0 + e / D;
      var x = 0.0;
      if (s < p.S) { x = K[kIndex(b, s, g, e % D)]; }
      KVs[e] = x;
    }
    workgroupBarrier();
    // ds = p (dp - Delta), p = exp(scale q . k - L)
    for (var e = tid; e < BQ * BK; e += WG) {
      let r = e / BK;
      let c = e % BK;
      let i = i0 + r;
      let s = s0 + c;
      var ds = 0.0;
      if (i < p.T && s < p.S && visible(b, i, s)) {
        var dot = 0.0;
        for (var d = 0u; d < D; d++) { dot += Qs[r * D + d] * KVs[c * D + d]; }
        let pr = exp(dot * p.scale - rowLse[r]);
        ds = pr * (Ss[e] - rowDelta[r]);
      }
      Ss[e] = ds;
    }
    workgroupBarrier();
    // dq += ds K (scale applied at the end)
    for (var k = 0u; k < ACC; k++) {
      let e = tid + k * WG;
      if (e < BQ * D) {
        let r = e / D;
        let d = e % D;
        var a = acc[k];
        for (var c = 0u; c < BK; c++) { a += Ss[r * BK + c] * KVs[c * D + d]; }
        acc[k] = a;
      }
    }
  }

  for (var k = 0u; k < ACC; k++) {
    let e = tid + k * WG;
    if (e < BQ * D) {
      let i = i0 + e / D;
      if (i < p.T) {
        let qi = qIndex(b, i, h, e % D);
        dQ[qi] = dQ[qi] + p.scale * acc[k];
      }
    }
  }
}

// ---- backward, step 3: dk and dv, one workgroup per (key block, kv head, batch) --

@compute @workgroup_size(WG)
fn attention_backward_dkdv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let b = wg.z;
  let g = wg.y;
  let G = p.Hq / p.Hkv;
  let s0 = wg.x * BK;
  for (var e = tid; e < BK * D; e += WG) {
    let s = s0 + e / D;
    var x = 0.0;
    var y = 0.0;
    if (s < p.S) {
      let ki = kIndex(b, s, g, e % D);
      x = K[ki];
      y = V[ki];
    }
    Ks[e] = x;
    Vs[e] = y;
  }
  // accK[k], accV[k] are entry tid + k * WG of the BK x D tile.
  var accK: array<f32, ACC>;
  var accV: array<f32, ACC>;
  for (var k = 0u; k < ACC; k++) { accK[k] = 0.0; accV[k] = 0.0; }
  // Queries before qo + i = s0 see none of the non-prefix keys s0..
  var iStart = 0u;
  if (s0 >= p.P) { iStart = u32(clamp(i32(s0) - p.qo, 0, i32(p.T))); }

  for (var hh = 0u; hh < G; hh++) {
    let h = g * G + hh;
    for (var i0 = iStart; i0 < p.T; i0 += BQ) {
      workgroupBarrier();
      loadQueryTiles(b, h, i0, tid);
      workgroupBarrier();
      // p = exp(scale q . k - L), ds = p (dO . v - Delta)
      for (var e = tid; e < BQ * BK; e += WG) {
        let r = e / BK;
        let c = e % BK;
        let i = i0 + r;
        let s = s0 + c;
        var pr = 0.0;
        var ds = 0.0;
        if (i < p.T && s < p.S && visible(b, i, s)) {
          var qk = 0.0;
          var dov = 0.0;
          for (var d = 0u; d < D; d++) {
            qk += Qs[r * D + d] * Ks[c * D + d];
            dov += dOs[r * D + d] * Vs[c * D + d];
          }
          pr = exp(qk * p.scale - rowLse[r]);
          ds = pr * (dov - rowDelta[r]);
        }
        Ss[e] = pr;
        dSs[e] = ds;
      }
      workgroupBarrier();
      // dv += p^T dO,  dk += ds^T Q (scale applied at the end)
      for (var k = 0u; k < ACC; k++) {
        let e = tid + k * WG;
        if (e < BK * D) {
          let c = e / D;
          let d = e % D;
          var av = accV[k];
          var ak = accK[k];
          for (var r = 0u; r < BQ; r++) {
            av += Ss[r * BK + c] * dOs[r * D + d];
            ak += dSs[r * BK + c] * Qs[r * D + d];
          }
          accV[k] = av;
          accK[k] = ak;
        }
      }
    }
  }

  for (var k = 0u; k < ACC; k++) {
    let e = tid + k * WG;
    if (e < BK * D) {
      let s = s0 + e / D;
      if (s < p.S) {
        let ki = kIndex(b, s, g, e % D);
        if (p.writeK == 1u) { dK[ki] = dK[ki] + p.scale * accK[k]; }
        if (p.writeV == 1u) { dV[ki] = dV[ki] + accV[k]; }
      }
    }
  }
}
