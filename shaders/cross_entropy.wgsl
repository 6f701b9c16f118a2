// Fused softmax cross-entropy with ignore index -100.
// Legend: N rows (tokens), V vocabulary. logits [N, V], labels [N] (i32).
//
// Per row n with label y != -100:
//   L_n = logsumexp_j x_nj - x_ny
// reduction 'mean': loss = sum_n L_n / count, count = #{n : y_n != -100} (loss 0 when count = 0)
// reduction 'sum' : loss = sum_n L_n;  'none': losses [N], ignored rows 0.
// A label outside [0, V) that is not -100 gives L_n = NaN (the GPU cannot throw;
// host labels are checked in cross_entropy.ts) and is counted.
//
// Backward: dx_nj += c_n (softmax_j(x_n) - [j == y_n]), softmax recomputed from the
// saved logsumexp, with c_n = dloss / count ('mean'), dloss ('sum'), dloss_n ('none');
// ignored and out-of-range rows get nothing.
//
// Rows are spread over a 2-D grid (row = wg.y * nx + wg.x) so that N may exceed
// 65535; one workgroup of WG threads per row (an override: 256 for large V, 64
// for small), strided over V. Reductions are two-level (16 partial lanes, then
// one) so they cost two barriers, not log2(WG): barriers dominate on CPU
// Vulkan (SwiftShader) and cost little extra work on GPUs.

struct Params { N: u32, V: u32, nx: u32, mode: u32 }

override WG: u32 = 256u;
const LANES: u32 = 16u;
const IGNORE: i32 = -100;
const NEG: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
// forward
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
// backward
@group(0) @binding(3) var<storage, read> lseR: array<f32>;
@group(0) @binding(4) var<storage, read> dloss: array<f32>;
@group(0) @binding(5) var<storage, read> countR: array<f32>;
@group(0) @binding(6) var<storage, read_write> dlogits: array<f32>;

var<workgroup> redM: array<f32, WG>;
var<workgroup> redS: array<f32, WG>;

// (m1, s1) + (m2, s2) = (M, s1 exp(m1 - M) + s2 exp(m2 - M)), M = max(m1, m2): logsumexp pairs.
fn lseCombine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let mm = max(a.x, b.x);
  return vec2<f32>(mm, a.y * exp(a.x - mm) + b.y * exp(b.x - mm));
}

// A quiet NaN built at run time (a constant NaN does not compile).
fn nanF32() -> f32 { return bitcast<f32>(0x7fc00000u | (p.N & 0u)); }

// ---- forward: L_n and logsumexp_n, one workgroup per row -----------------------
@compute @workgroup_size(WG)
fn cross_entropy_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n = wg.y * p.nx + wg.x;
  if (n >= p.N) { return; }
  let base = n * p.V;
  // Online logsumexp per thread: (m, s) with s = sum exp(x - m).
  var m = NEG;
  var s = 0.0;
  for (var j = tid; j < p.V; j += WG) {
    let x = logits[base + j];
    if (x > m) {
      s = s * exp(m - x) + 1.0;
      m = x;
    } else {
      s += exp(x - m);
    }
  }
  redM[tid] = m;
  redS[tid] = s;
  workgroupBarrier();
  // lane t < LANES combines entries t, t + LANES, ...; thread 0 combines the lanes.
  if (tid < LANES) {
    var a = vec2<f32>(redM[tid], redS[tid]);
    for (var k = tid + LANES; k < WG; k += LANES) { a = lseCombine(a, vec2<f32>(redM[k], redS[k])); }
    redM[tid] = a.x;
    redS[tid] = a.y;
  }
  workgroupBarrier();
  if (tid == 0u) {
    var a = vec2<f32>(redM[0], redS[0]);
    for (var k = 1u; k < LANES; k++) { a = lseCombine(a, vec2<f32>(redM[k], redS[k])); }
    let l = a.x + log(a.y);
    let y = labels[n];
    var loss = 0.0;
    if (y != IGNORE) {
      if (y < 0 || u32(y) >= p.V) {
        loss = nanF32();
      } else {
        loss = l - logits[base + u32(y)];
      }
    }
    losses[n] = loss;
    lse[n] = l;
  }
}

// ---- reduce: loss = sum L_n (/ count), single workgroup, fixed order ------------
@group(0) @binding(1) var<storage, read> lossesR: array<f32>;
@group(0) @binding(3) var<storage, read_write> total: array<f32>;
@group(0) @binding(4) var<storage, read_write> count: array<f32>;

@compute @workgroup_size(WG)
fn cross_entropy_reduce(@builtin(local_invocation_index) tid: u32) {
  var s = 0.0;
  var c = 0.0;
  for (var n = tid; n < p.N; n += WG) {
    s += lossesR[n];
    if (labels[n] != IGNORE) { c += 1.0; }
  }
  redM[tid] = s;
  redS[tid] = c;
  workgroupBarrier();
  if (tid < LANES) {
    for (var k = tid + LANES; k < WG; k += LANES) {
      redM[tid] += redM[k];
      redS[tid] += redS[k];
    }
  }
  workgroupBarrier();
  if (tid == 0u) {
    for (var k = 1u; k < LANES; k++) {
      redM[0] += redM[k];
      redS[0] += redS[k];
    }
    let cnt = redS[0];
    var loss = redM[0];
    if (p.mode == 0u) { loss = select(0.0, loss / cnt, cnt > 0.0); }
    total[0] = loss;
    count[0] = cnt;
  }
}

// ---- backward: dlogits += c_n (softmax - onehot), one workgroup per row ----------
@compute @workgroup_size(WG)
fn cross_entropy_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n = wg.y * p.nx + wg.x;
  if (n >= p.N) { return; }
  let y = labels[n];
  if (y == IGNORE || y < 0 || u32(y) >= p.V) { return; }
  var c: f32;
  if (p.mode == 0u) { c = dloss[0] / countR[0]; }
  else if (p.mode == 1u) { c = dloss[0]; }
  else { c = dloss[n]; }
  let base = n * p.V;
  let l = lseR[n];
  for (var j = tid; j < p.V; j += WG) {
    var g = exp(logits[base + j] - l);
    if (j == u32(y)) { g -= 1.0; }
    dlogits[base + j] += c * g;
  }
}

// ---- v2 for short rows (V % 4 == 0, V small; chosen on the host) ------------------
// forward: one thread per row, no workgroup memory, no barriers (max pass, then
// a sum-of-exp pass, both with vec4 loads). backward: one thread per vec4 of
// logits. On SwiftShader (barriers ~1 us per thread, every storage access a
// per-lane gather) at N = 512, V = 512: forward v1 ~13 ms, v2 ~2 ms;
// backward v1 ~4 ms, v2 ~1 ms. Same semantics and bindings as above; the
// reduce kernel is shared.
@group(0) @binding(1) var<storage, read> logits4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dlogits4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn cross_entropy_forward_row(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = gid.x + gid.y * nwg.x * 64u;
  if (n >= p.N) { return; }
  let V4 = p.V / 4u;
  let base = n * V4;
  var m4 = vec4<f32>(NEG);
  for (var j = 0u; j < V4; j++) { m4 = max(m4, logits4[base + j]); }
  let m = max(max(m4.x, m4.y), max(m4.z, m4.w));
  var s4 = vec4<f32>(0.0);
  for (var j = 0u; j < V4; j++) { s4 += exp(logits4[base + j] - m); }
  let l = m + log(s4.x + s4.y + s4.z + s4.w);
  let y = labels[n];
  var loss = 0.0;
  if (y != IGNORE) {
    if (y < 0 || u32(y) >= p.V) {
      loss = nanF32();
    } else {
      loss = l - logits4[base + u32(y) / 4u][u32(y) % 4u];
    }
  }
  losses[n] = loss;
  lse[n] = l;
}

@compute @workgroup_size(256)
fn cross_entropy_backward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  let V4 = p.V / 4u;
  if (i >= p.N * V4) { return; }
  let n = i / V4;
  let y = labels[n];
  if (y == IGNORE || y < 0 || u32(y) >= p.V) { return; }
  var c: f32;
  if (p.mode == 0u) { c = dloss[0] / countR[0]; }
  else if (p.mode == 1u) { c = dloss[0]; }
  else { c = dloss[n]; }
  let j0 = (i % V4) * 4u;
  let onehot = select(vec4<f32>(0.0), vec4<f32>(1.0), vec4<u32>(j0, j0 + 1u, j0 + 2u, j0 + 3u) == vec4<u32>(u32(y)));
  dlogits4[i] += c * (exp(logits4[i] - lseR[n]) - onehot);
}
