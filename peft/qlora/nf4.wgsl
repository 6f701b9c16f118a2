// NF4 (bitsandbytes 4-bit NormalFloat) base weights for QLoRA, METHODS.md §5.
//
// One frozen linear W [N, K] (out × in, n = N·K values, flattened row-major)
// lives in one u32 buffer S, the "state":
//   S[0 .. nw)            codes: 8 four-bit indices per word, nw = ceil(n/8). The
//                         words are bitsandbytes' uint8 stream read little-endian:
//                         element 2j sits in the HIGH nibble of byte j, 2j+1 in the
//                         low one, so element e of a word is at bit
//                         8·(e>>1) + 4·(1 − (e&1)).
//   double quantization (DQ = 1):
//   S[qa .. qa + ceil(nb/4))  qabsmax: one byte per 64-block (nb = ceil(n/64)),
//                             4 per word, byte j at bits 8·(j&3) of word j>>2
//   S[a2 .. a2 + ceil(nb/256)) absmax2: f32 bits, one per 256 absmax values
//   S[off]                     offset: f32 bits, the mean of the absmax vector
//   single quantization (DQ = 0):
//   S[qa .. qa + nb)           absmax: f32 bits, one per 64-block
//
// Dequantization (fp32), never materialised as a tensor:
//   absmax_j = D[qabsmax_j] · absmax2_{j/256} + offset      (DQ; D = dynamic 8-bit code)
//   Ŵ[i]     = NF4[q_i] · absmax_{i/64}
//
// Kernels:
//   nf4_forward_*   Y = alpha · X Ŵᵀ (+ bias) + beta · Y     X [M, K], Y [M, N]
//   nf4_backward_*  dX = alpha · dY Ŵ + beta · dX            dY [M, N], dX [M, K]
//   quant_*, dq_*   the quantizer (absmax, codes, then the double quantization).
// Variants by shape (chosen on the host):
//   _k8   K % 8 == 0 (backward also N % 4 == 0): a row of W is whole words, a
//         word never straddles a 64-block, X / dX rows are vec4-aligned;
//         8×8 register blocks, so each decoded word serves 8 rows.
//   _k4   K % 4 == 0 (backward also N % 4 == 0): steps of 4 elements (a
//         half-word, inside one block), 8×8 blocks as well.
//   _any  any other shape, element by element, 4×4 blocks (odd test shapes).
//
// No workgroup memory and no barriers (SwiftShader charges ~1 us per thread per
// barrier); each thread owns a register block and decodes the words it needs.
// Measured on SwiftShader (2 busy cores, best of 5, ms; f32 = matmul_v4):
//   128x576x576  forward f32 ~80-140, 4x4 blocks ~270-480, 8x8 ~340 (vs 480 in
//   the same run); backward 8 rows x 4 n ~300 vs 480 for 4x4. 64x64x172 (k4
//   vs element-wise): forward 5.3 vs 6.7-17, backward 3.9 vs 15.6. About 30 %
//   of the NF4 time is the code-table lookup (measured by replacing it);
//   a select-tree lookup was slower than the private array.
// Launch grid: 64 threads per workgroup, 2-D (x, y) so that large grids fit;
// thread t = gid.x + gid.y · nwg.x · 64.

struct Params {
  M: u32, N: u32, K: u32, n: u32,
  qa: u32, a2: u32, off: u32, nb: u32,
  beta: u32, hasBias: u32, alpha: f32, _p: u32,
}

override DQ: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;

// The 16 NF4 code values of bitsandbytes, exactly (METHODS.md §5).
var<private> NF4: array<f32, 16> = array<f32, 16>(
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
  -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0);

fn threadIndex(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * 64u;
}

// Bit position of element e (0..7) inside its code word.
fn nibbleShift(e: u32) -> u32 {
  return ((e >> 1u) << 3u) + ((1u - (e & 1u)) << 2u);
}

// ---------------------------------------------------------------------------
// Matmul kernels. Bindings: 1 input (X or dY), 2 state S, 3 dynamic code D,
// 4 bias (forward only; any buffer when hasBias = 0), 4/5 output.

@group(0) @binding(2) var<storage, read> S: array<u32>;
@group(0) @binding(3) var<storage, read> D: array<f32>;

fn absmaxOf(j: u32, offset: f32) -> f32 {
  if (DQ == 1u) {
    let q = (S[p.qa + (j >> 2u)] >> ((j & 3u) << 3u)) & 0xffu;
    return D[q] * bitcast<f32>(S[p.a2 + (j >> 8u)]) + offset;
  }
  return bitcast<f32>(S[p.qa + j]);
}

fn loadOffset() -> f32 {
  if (DQ == 1u) { return bitcast<f32>(S[p.off]); }
  return 0.0;
}

// Ŵ[i] for any flat index i (one word load and one absmax decode).
fn weightAt(i: u32, offset: f32) -> f32 {
  let q = (S[i >> 3u] >> nibbleShift(i & 7u)) & 15u;
  return NF4[q] * absmaxOf(i >> 6u, offset);
}

// The 8 code values of one word, unscaled: elements 0..3 in a, 4..7 in b.
struct W8 { a: vec4<f32>, b: vec4<f32> }

fn codes8(w: u32) -> W8 {
  return W8(
    vec4<f32>(NF4[(w >> 4u) & 15u], NF4[w & 15u], NF4[(w >> 12u) & 15u], NF4[(w >> 8u) & 15u]),
    vec4<f32>(NF4[(w >> 20u) & 15u], NF4[(w >> 16u) & 15u], NF4[(w >> 28u) & 15u], NF4[(w >> 24u) & 15u]));
}

// The 4 code values of the half-word v (bits 0..15 of v): elements 0..3.
fn codes4(v: u32) -> vec4<f32> {
  return vec4<f32>(NF4[(v >> 4u) & 15u], NF4[v & 15u], NF4[(v >> 12u) & 15u], NF4[(v >> 8u) & 15u]);
}

// The half-word holding elements i..i+3 (i % 4 == 0), shifted down to bits 0..15.
fn half4(i: u32) -> u32 {
  return S[i >> 3u] >> ((i & 4u) << 2u);
}

// --- forward, K % 8 == 0: each thread computes Y[m0..m0+7, n0..n0+7] ------------
// Per step of 8 along k: 8 code words (one per W row) and 16 vec4 loads of X
// feed 512 FMAs; each decoded word serves 8 rows of X.

@group(0) @binding(1) var<storage, read> X4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> Y: array<f32>;

fn storeY(m: u32, n0: u32, acc: vec4<f32>) {
  if (m >= p.M) { return; }
  for (var c = 0u; c < 4u; c++) {
    let n = n0 + c;
    if (n >= p.N) { return; }
    let yi = m * p.N + n;
    var v = p.alpha * acc[c];
    if (p.hasBias == 1u) { v += bias[n]; }
    if (p.beta == 1u) { v += Y[yi]; }
    Y[yi] = v;
  }
}

// Ŵ[n0..n0+7, k..k+7] dequantized (code · absmax, the CPU reference's product):
// column j of lo_* is W row n0 + j (hi_*: n0 + 4 + j); _a holds k..k+3, _b
// k+4..k+7, so xa · lo_a + xb · lo_b = (Σ_k x_k Ŵ[n0 + j, k])_j.
struct Blk { lo_a: mat4x4<f32>, lo_b: mat4x4<f32>, hi_a: mat4x4<f32>, hi_b: mat4x4<f32> }
struct Acc { lo: vec4<f32>, hi: vec4<f32> }

fn fmaRow8(r: ptr<function, Acc>, xa: vec4<f32>, xb: vec4<f32>, w: Blk) {
  (*r).lo += xa * w.lo_a + xb * w.lo_b;
  (*r).hi += xa * w.hi_a + xb * w.hi_b;
}

fn storeY8(m: u32, n0: u32, r: Acc) {
  storeY(m, n0, r.lo);
  storeY(m, n0 + 4u, r.hi);
}

fn refresh(s: f32, wi: u32, kw: u32, offset: f32) -> f32 {
  if (kw == 0u || (wi & 7u) == 0u) { return absmaxOf(wi >> 3u, offset); }
  return s;
}

@compute @workgroup_size(64)
fn nf4_forward_k8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = threadIndex(gid, nwg);
  let tilesN = (p.N + 7u) / 8u;
  let m0 = (t / tilesN) * 8u;
  let n0 = (t % tilesN) * 8u;
  if (m0 >= p.M) { return; }
  let K4 = p.K / 4u;
  let K8 = p.K / 8u;
  let offset = loadOffset();
  let lm = p.M - 1u;
  let x0 = min(m0, lm) * K4; let x1 = min(m0 + 1u, lm) * K4;
  let x2 = min(m0 + 2u, lm) * K4; let x3 = min(m0 + 3u, lm) * K4;
  let x4 = min(m0 + 4u, lm) * K4; let x5 = min(m0 + 5u, lm) * K4;
  let x6 = min(m0 + 6u, lm) * K4; let x7 = min(m0 + 7u, lm) * K4;
  let ln = p.N - 1u;
  let w0 = min(n0, ln) * K8; let w1 = min(n0 + 1u, ln) * K8;
  let w2 = min(n0 + 2u, ln) * K8; let w3 = min(n0 + 3u, ln) * K8;
  let w4 = min(n0 + 4u, ln) * K8; let w5 = min(n0 + 5u, ln) * K8;
  let w6 = min(n0 + 6u, ln) * K8; let w7 = min(n0 + 7u, ln) * K8;
  let z = Acc(vec4<f32>(0.0), vec4<f32>(0.0));
  var r0 = z; var r1 = z; var r2 = z; var r3 = z;
  var r4 = z; var r5 = z; var r6 = z; var r7 = z;
  var s0 = 0.0; var s1 = 0.0; var s2 = 0.0; var s3 = 0.0;
  var s4 = 0.0; var s5 = 0.0; var s6 = 0.0; var s7 = 0.0;
  for (var kw = 0u; kw < K8; kw++) {
    s0 = refresh(s0, w0 + kw, kw, offset); s1 = refresh(s1, w1 + kw, kw, offset);
    s2 = refresh(s2, w2 + kw, kw, offset); s3 = refresh(s3, w3 + kw, kw, offset);
    s4 = refresh(s4, w4 + kw, kw, offset); s5 = refresh(s5, w5 + kw, kw, offset);
    s6 = refresh(s6, w6 + kw, kw, offset); s7 = refresh(s7, w7 + kw, kw, offset);
    let c0 = codes8(S[w0 + kw]); let c1 = codes8(S[w1 + kw]);
    let c2 = codes8(S[w2 + kw]); let c3 = codes8(S[w3 + kw]);
    let c4 = codes8(S[w4 + kw]); let c5 = codes8(S[w5 + kw]);
    let c6 = codes8(S[w6 + kw]); let c7 = codes8(S[w7 + kw]);
    let w = Blk(
      mat4x4<f32>(s0 * c0.a, s1 * c1.a, s2 * c2.a, s3 * c3.a),
      mat4x4<f32>(s0 * c0.b, s1 * c1.b, s2 * c2.b, s3 * c3.b),
      mat4x4<f32>(s4 * c4.a, s5 * c5.a, s6 * c6.a, s7 * c7.a),
      mat4x4<f32>(s4 * c4.b, s5 * c5.b, s6 * c6.b, s7 * c7.b));
    let k4 = 2u * kw;
    fmaRow8(&r0, X4[x0 + k4], X4[x0 + k4 + 1u], w);
    fmaRow8(&r1, X4[x1 + k4], X4[x1 + k4 + 1u], w);
    fmaRow8(&r2, X4[x2 + k4], X4[x2 + k4 + 1u], w);
    fmaRow8(&r3, X4[x3 + k4], X4[x3 + k4 + 1u], w);
    fmaRow8(&r4, X4[x4 + k4], X4[x4 + k4 + 1u], w);
    fmaRow8(&r5, X4[x5 + k4], X4[x5 + k4 + 1u], w);
    fmaRow8(&r6, X4[x6 + k4], X4[x6 + k4 + 1u], w);
    fmaRow8(&r7, X4[x7 + k4], X4[x7 + k4 + 1u], w);
  }
  storeY8(m0, n0, r0); storeY8(m0 + 1u, n0, r1);
  storeY8(m0 + 2u, n0, r2); storeY8(m0 + 3u, n0, r3);
  storeY8(m0 + 4u, n0, r4); storeY8(m0 + 5u, n0, r5);
  storeY8(m0 + 6u, n0, r6); storeY8(m0 + 7u, n0, r7);
}

// --- forward, K % 4 == 0: Y[m0..m0+7, n0..n0+7] in steps of 4 along k -----------
// Elements i..i+3 (i % 4 == 0) are a half-word inside one 64-block.

fn refresh4(s: f32, i: u32, k: u32, offset: f32) -> f32 {
  if (k == 0u || (i & 63u) == 0u) { return absmaxOf(i >> 6u, offset); }
  return s;
}

fn fmaRow4(r: ptr<function, Acc>, x: vec4<f32>, lo: mat4x4<f32>, hi: mat4x4<f32>) {
  (*r).lo += x * lo;
  (*r).hi += x * hi;
}

@compute @workgroup_size(64)
fn nf4_forward_k4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = threadIndex(gid, nwg);
  let tilesN = (p.N + 7u) / 8u;
  let m0 = (t / tilesN) * 8u;
  let n0 = (t % tilesN) * 8u;
  if (m0 >= p.M) { return; }
  let K4 = p.K / 4u;
  let offset = loadOffset();
  let lm = p.M - 1u;
  let x0 = min(m0, lm) * K4; let x1 = min(m0 + 1u, lm) * K4;
  let x2 = min(m0 + 2u, lm) * K4; let x3 = min(m0 + 3u, lm) * K4;
  let x4 = min(m0 + 4u, lm) * K4; let x5 = min(m0 + 5u, lm) * K4;
  let x6 = min(m0 + 6u, lm) * K4; let x7 = min(m0 + 7u, lm) * K4;
  // Element index of each W row start (a multiple of 4).
  let ln = p.N - 1u;
  let w0 = min(n0, ln) * p.K; let w1 = min(n0 + 1u, ln) * p.K;
  let w2 = min(n0 + 2u, ln) * p.K; let w3 = min(n0 + 3u, ln) * p.K;
  let w4 = min(n0 + 4u, ln) * p.K; let w5 = min(n0 + 5u, ln) * p.K;
  let w6 = min(n0 + 6u, ln) * p.K; let w7 = min(n0 + 7u, ln) * p.K;
  let z = Acc(vec4<f32>(0.0), vec4<f32>(0.0));
  var r0 = z; var r1 = z; var r2 = z; var r3 = z;
  var r4 = z; var r5 = z; var r6 = z; var r7 = z;
  var s0 = 0.0; var s1 = 0.0; var s2 = 0.0; var s3 = 0.0;
  var s4 = 0.0; var s5 = 0.0; var s6 = 0.0; var s7 = 0.0;
  for (var kq = 0u; kq < K4; kq++) {
    let k = 4u * kq;
    s0 = refresh4(s0, w0 + k, k, offset); s1 = refresh4(s1, w1 + k, k, offset);
    s2 = refresh4(s2, w2 + k, k, offset); s3 = refresh4(s3, w3 + k, k, offset);
    s4 = refresh4(s4, w4 + k, k, offset); s5 = refresh4(s5, w5 + k, k, offset);
    s6 = refresh4(s6, w6 + k, k, offset); s7 = refresh4(s7, w7 + k, k, offset);
    let lo = mat4x4<f32>(s0 * codes4(half4(w0 + k)), s1 * codes4(half4(w1 + k)), s2 * codes4(half4(w2 + k)), s3 * codes4(half4(w3 + k)));
    let hi = mat4x4<f32>(s4 * codes4(half4(w4 + k)), s5 * codes4(half4(w5 + k)), s6 * codes4(half4(w6 + k)), s7 * codes4(half4(w7 + k)));
    fmaRow4(&r0, X4[x0 + kq], lo, hi); fmaRow4(&r1, X4[x1 + kq], lo, hi);
    fmaRow4(&r2, X4[x2 + kq], lo, hi); fmaRow4(&r3, X4[x3 + kq], lo, hi);
    fmaRow4(&r4, X4[x4 + kq], lo, hi); fmaRow4(&r5, X4[x5 + kq], lo, hi);
    fmaRow4(&r6, X4[x6 + kq], lo, hi); fmaRow4(&r7, X4[x7 + kq], lo, hi);
  }
  storeY8(m0, n0, r0); storeY8(m0 + 1u, n0, r1);
  storeY8(m0 + 2u, n0, r2); storeY8(m0 + 3u, n0, r3);
  storeY8(m0 + 4u, n0, r4); storeY8(m0 + 5u, n0, r5);
  storeY8(m0 + 6u, n0, r6); storeY8(m0 + 7u, n0, r7);
}

// --- forward, any K: Y[m0..m0+3, n0..n0+3], element-wise decode ---------------

@group(0) @binding(1) var<storage, read> X: array<f32>;

@compute @workgroup_size(64)
fn nf4_forward_any(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = threadIndex(gid, nwg);
  let tilesN = (p.N + 3u) / 4u;
  let m0 = (t / tilesN) * 4u;
  let n0 = (t % tilesN) * 4u;
  if (m0 >= p.M) { return; }
  let offset = loadOffset();
  let x0 = min(m0, p.M - 1u) * p.K;
  let x1 = min(m0 + 1u, p.M - 1u) * p.K;
  let x2 = min(m0 + 2u, p.M - 1u) * p.K;
  let x3 = min(m0 + 3u, p.M - 1u) * p.K;
  let r0 = min(n0, p.N - 1u) * p.K;
  let r1 = min(n0 + 1u, p.N - 1u) * p.K;
  let r2 = min(n0 + 2u, p.N - 1u) * p.K;
  let r3 = min(n0 + 3u, p.N - 1u) * p.K;
  var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
  var s = vec4<f32>(0.0);
  for (var k = 0u; k < p.K; k++) {
    if (k == 0u || ((r0 + k) & 63u) == 0u) { s.x = absmaxOf((r0 + k) >> 6u, offset); }
    if (k == 0u || ((r1 + k) & 63u) == 0u) { s.y = absmaxOf((r1 + k) >> 6u, offset); }
    if (k == 0u || ((r2 + k) & 63u) == 0u) { s.z = absmaxOf((r2 + k) >> 6u, offset); }
    if (k == 0u || ((r3 + k) & 63u) == 0u) { s.w = absmaxOf((r3 + k) >> 6u, offset); }
    let i0 = r0 + k; let i1 = r1 + k; let i2 = r2 + k; let i3 = r3 + k;
    let w = s * vec4<f32>(
      NF4[(S[i0 >> 3u] >> nibbleShift(i0 & 7u)) & 15u],
      NF4[(S[i1 >> 3u] >> nibbleShift(i1 & 7u)) & 15u],
      NF4[(S[i2 >> 3u] >> nibbleShift(i2 & 7u)) & 15u],
      NF4[(S[i3 >> 3u] >> nibbleShift(i3 & 7u)) & 15u]);
    acc0 += X[x0 + k] * w;
    acc1 += X[x1 + k] * w;
    acc2 += X[x2 + k] * w;
    acc3 += X[x3 + k] * w;
  }
  storeY(m0, n0, acc0);
  storeY(m0 + 1u, n0, acc1);
  storeY(m0 + 2u, n0, acc2);
  storeY(m0 + 3u, n0, acc3);
}

// --- backward, K % 8 == 0 and N % 4 == 0: dX[m0..m0+7, 8kw..8kw+7] -------------
// Per step of 4 along n: 4 code words (one column word of 4 W rows), 8 vec4
// loads of dY, 256 FMAs.

@group(0) @binding(1) var<storage, read> dY4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dX4: array<vec4<f32>>;

fn storeDx8(m: u32, kw: u32, a: vec4<f32>, b: vec4<f32>) {
  if (m >= p.M) { return; }
  let i = m * (p.K / 4u) + 2u * kw;
  var va = p.alpha * a;
  var vb = p.alpha * b;
  if (p.beta == 1u) { va += dX4[i]; vb += dX4[i + 1u]; }
  dX4[i] = va;
  dX4[i + 1u] = vb;
}

// dX row += Ŵ[4 n, k..k+7]ᵀ dY[m, 4 n]: columns of wa / wb are the 4 W rows.
fn fmaDx(a: ptr<function, Acc>, g: vec4<f32>, wa: mat4x4<f32>, wb: mat4x4<f32>) {
  (*a).lo += wa * g;
  (*a).hi += wb * g;
}

@compute @workgroup_size(64)
fn nf4_backward_k8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = threadIndex(gid, nwg);
  let K8 = p.K / 8u;
  let kw = t % K8;
  let m0 = (t / K8) * 8u;
  if (m0 >= p.M) { return; }
  let offset = loadOffset();
  let N4 = p.N / 4u;
  let lm = p.M - 1u;
  let d0 = min(m0, lm) * N4; let d1 = min(m0 + 1u, lm) * N4;
  let d2 = min(m0 + 2u, lm) * N4; let d3 = min(m0 + 3u, lm) * N4;
  let d4 = min(m0 + 4u, lm) * N4; let d5 = min(m0 + 5u, lm) * N4;
  let d6 = min(m0 + 6u, lm) * N4; let d7 = min(m0 + 7u, lm) * N4;
  let z = Acc(vec4<f32>(0.0), vec4<f32>(0.0));
  var a0 = z; var a1 = z; var a2 = z; var a3 = z;
  var a4 = z; var a5 = z; var a6 = z; var a7 = z;
  for (var nq = 0u; nq < N4; nq++) {
    let wi = 4u * nq * K8 + kw;
    let c0 = codes8(S[wi]);
    let c1 = codes8(S[wi + K8]);
    let c2 = codes8(S[wi + 2u * K8]);
    let c3 = codes8(S[wi + 3u * K8]);
    let s0 = absmaxOf(wi >> 3u, offset);
    let s1 = absmaxOf((wi + K8) >> 3u, offset);
    let s2 = absmaxOf((wi + 2u * K8) >> 3u, offset);
    let s3 = absmaxOf((wi + 3u * K8) >> 3u, offset);
    let wa = mat4x4<f32>(s0 * c0.a, s1 * c1.a, s2 * c2.a, s3 * c3.a);
    let wb = mat4x4<f32>(s0 * c0.b, s1 * c1.b, s2 * c2.b, s3 * c3.b);
    fmaDx(&a0, dY4[d0 + nq], wa, wb); fmaDx(&a1, dY4[d1 + nq], wa, wb);
    fmaDx(&a2, dY4[d2 + nq], wa, wb); fmaDx(&a3, dY4[d3 + nq], wa, wb);
    fmaDx(&a4, dY4[d4 + nq], wa, wb); fmaDx(&a5, dY4[d5 + nq], wa, wb);
    fmaDx(&a6, dY4[d6 + nq], wa, wb); fmaDx(&a7, dY4[d7 + nq], wa, wb);
  }
  storeDx8(m0, kw, a0.lo, a0.hi); storeDx8(m0 + 1u, kw, a1.lo, a1.hi);
  storeDx8(m0 + 2u, kw, a2.lo, a2.hi); storeDx8(m0 + 3u, kw, a3.lo, a3.hi);
  storeDx8(m0 + 4u, kw, a4.lo, a4.hi); storeDx8(m0 + 5u, kw, a5.lo, a5.hi);
  storeDx8(m0 + 6u, kw, a6.lo, a6.hi); storeDx8(m0 + 7u, kw, a7.lo, a7.hi);
}

// --- backward, K % 4 == 0 and N % 4 == 0: dX[m0..m0+7, 4kq..4kq+3], 4 n per step --

fn storeDx4(m: u32, kq: u32, a: vec4<f32>) {
  if (m >= p.M) { return; }
  let i = m * (p.K / 4u) + kq;
  var v = p.alpha * a;
  if (p.beta == 1u) { v += dX4[i]; }
  dX4[i] = v;
}

@compute @workgroup_size(64)
fn nf4_backward_k4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = threadIndex(gid, nwg);
  let K4 = p.K / 4u;
  let kq = t % K4;
  let m0 = (t / K4) * 8u;
  if (m0 >= p.M) { return; }
  let offset = loadOffset();
  let N4 = p.N / 4u;
  let lm = p.M - 1u;
  let d0 = min(m0, lm) * N4; let d1 = min(m0 + 1u, lm) * N4;
  let d2 = min(m0 + 2u, lm) * N4; let d3 = min(m0 + 3u, lm) * N4;
  let d4 = min(m0 + 4u, lm) * N4; let d5 = min(m0 + 5u, lm) * N4;
  let d6 = min(m0 + 6u, lm) * N4; let d7 = min(m0 + 7u, lm) * N4;
  var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
  var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0); var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
  for (var nq = 0u; nq < N4; nq++) {
    let i0 = 4u * nq * p.K + 4u * kq;
    let i1 = i0 + p.K; let i2 = i1 + p.K; let i3 = i2 + p.K;
    // Columns: Ŵ[n, 4kq..4kq+3] for the 4 n of this step.
    let w = mat4x4<f32>(
      absmaxOf(i0 >> 6u, offset) * codes4(half4(i0)), absmaxOf(i1 >> 6u, offset) * codes4(half4(i1)),
      absmaxOf(i2 >> 6u, offset) * codes4(half4(i2)), absmaxOf(i3 >> 6u, offset) * codes4(half4(i3)));
    a0 += w * dY4[d0 + nq]; a1 += w * dY4[d1 + nq];
    a2 += w * dY4[d2 + nq]; a3 += w * dY4[d3 + nq];
    a4 += w * dY4[d4 + nq]; a5 += w * dY4[d5 + nq];
    a6 += w * dY4[d6 + nq]; a7 += w * dY4[d7 + nq];
  }
  storeDx4(m0, kq, a0); storeDx4(m0 + 1u, kq, a1);
  storeDx4(m0 + 2u, kq, a2); storeDx4(m0 + 3u, kq, a3);
  storeDx4(m0 + 4u, kq, a4); storeDx4(m0 + 5u, kq, a5);
  storeDx4(m0 + 6u, kq, a6); storeDx4(m0 + 7u, kq, a7);
}

// --- backward, any K: dX[m0..m0+3, k0..k0+3] ---------------------------------

@group(0) @binding(1) var<storage, read> dY: array<f32>;

@group(0) @binding(4) var<storage, read_write> dX: array<f32>;

fn storeDx(m: u32, k0: u32, acc: vec4<f32>) {
  if (m >= p.M) { return; }
  for (var c = 0u; c < 4u; c++) {
    let k = k0 + c;
    if (k >= p.K) { return; }
    let i = m * p.K + k;
    var v = p.alpha * acc[c];
    if (p.beta == 1u) { v += dX[i]; }
    dX[i] = v;
  }
}

@compute @workgroup_size(64)
fn nf4_backward_any(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = threadIndex(gid, nwg);
  let tilesK = (p.K + 3u) / 4u;
  let k0 = (t % tilesK) * 4u;
  let m0 = (t / tilesK) * 4u;
  if (m0 >= p.M) { return; }
  let offset = loadOffset();
  let d0 = min(m0, p.M - 1u) * p.N;
  let d1 = min(m0 + 1u, p.M - 1u) * p.N;
  let d2 = min(m0 + 2u, p.M - 1u) * p.N;
  let d3 = min(m0 + 3u, p.M - 1u) * p.N;
  let k1 = min(k0 + 1u, p.K - 1u);
  let k2 = min(k0 + 2u, p.K - 1u);
  let k3 = min(k0 + 3u, p.K - 1u);
  var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
  for (var n = 0u; n < p.N; n++) {
    let r = n * p.K;
    let w = vec4<f32>(weightAt(r + k0, offset), weightAt(r + k1, offset), weightAt(r + k2, offset), weightAt(r + k3, offset));
    acc0 += dY[d0 + n] * w;
    acc1 += dY[d1 + n] * w;
    acc2 += dY[d2 + n] * w;
    acc3 += dY[d3 + n] * w;
  }
  storeDx(m0, k0, acc0);
  storeDx(m0 + 1u, k0, acc1);
  storeDx(m0 + 2u, k0, acc2);
  storeDx(m0 + 3u, k0, acc3);
}

// ---------------------------------------------------------------------------
// GPU quantizer (QLoRA quantizes on the CPU; this one avoids the readback).
// Bindings: 1 W (f32, n values), 2 absmax scratch A (f32, nb values), 3 D,
// 4 state Sq. Same arithmetic as quantizeNf4Cpu (bit-exact only where f32
// division is correctly rounded; WGSL allows 2.5 ulp):
// u = clamp(w / absmax, −1, 1) in fp32; index = number of code midpoints
// (c_k + c_{k+1}) / 2 strictly below u (nearest code, ties to the lower index).

@group(0) @binding(1) var<storage, read> Wq: array<f32>;
@group(0) @binding(2) var<storage, read_write> A: array<f32>;
@group(0) @binding(4) var<storage, read_write> Sq: array<u32>;
@group(0) @binding(2) var<storage, read> Ar: array<f32>;

// absmax_j = max |w| over the 64-block j (the last block may be shorter).
@compute @workgroup_size(64)
fn quant_absmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let j = threadIndex(gid, nwg);
  if (j >= p.nb) { return; }
  let end = min(j * 64u + 64u, p.n);
  var m = 0.0;
  for (var i = j * 64u; i < end; i++) { m = max(m, abs(Wq[i])); }
  A[j] = m;
}

fn nf4Index(u: f32) -> u32 {
  var q = 0u;
  for (var k = 0u; k < 15u; k++) {
    if ((NF4[k] + NF4[k + 1u]) * 0.5 < u) { q++; }
  }
  return q;
}

// One code word (8 elements) per thread; elements past n keep index 0 (padding).
@compute @workgroup_size(64)
fn quant_codes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = threadIndex(gid, nwg);
  let nw = (p.n + 7u) / 8u;
  if (w >= nw) { return; }
  var word = 0u;
  for (var e = 0u; e < 8u; e++) {
    let i = w * 8u + e;
    if (i >= p.n) { break; }
    let a = Ar[i >> 6u];
    // A block of zeros: every u is 0 (bitsandbytes clamps its absmax away from 0).
    var u = 0.0;
    if (a > 0.0) { u = clamp(Wq[i] / a, -1.0, 1.0); }
    word |= nf4Index(u) << nibbleShift(e);
  }
  Sq[w] = word;
}

// Double quantization, step 1 (one thread): offset = mean(absmax), summed
// sequentially in fp32 (the CPU reference sums in the same order).
@compute @workgroup_size(1)
fn dq_offset() {
  var s = 0.0;
  for (var j = 0u; j < p.nb; j++) { s += Ar[j]; }
  Sq[p.off] = bitcast<u32>(s / f32(p.nb));
}

// Step 2: absmax2_k = max |absmax_j − offset| over the 256-block k.
@compute @workgroup_size(64)
fn dq_absmax2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = threadIndex(gid, nwg);
  if (k * 256u >= p.nb) { return; }
  let offset = bitcast<f32>(Sq[p.off]);
  let end = min(k * 256u + 256u, p.nb);
  var m = 0.0;
  for (var j = k * 256u; j < end; j++) { m = max(m, abs(Ar[j] - offset)); }
  Sq[p.a2 + k] = bitcast<u32>(m);
}

// Nearest entry of the 256-value dynamic code D (binary search over midpoints).
fn dynIndex(u: f32) -> u32 {
  var lo = 0u;
  var hi = 255u;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if ((D[mid] + D[mid + 1u]) * 0.5 < u) { lo = mid + 1u; } else { hi = mid; }
  }
  return lo;
}

// Step 3: the 8-bit codes of (absmax − offset) / absmax2, four per word.
@compute @workgroup_size(64)
fn dq_codes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = threadIndex(gid, nwg);
  if (w * 4u >= p.nb) { return; }
  let offset = bitcast<f32>(Sq[p.off]);
  var word = 0u;
  for (var b = 0u; b < 4u; b++) {
    let j = w * 4u + b;
    if (j >= p.nb) { break; }
    let m2 = bitcast<f32>(Sq[p.a2 + (j >> 8u)]);
    var u = 0.0;
    if (m2 > 0.0) { u = clamp((Ar[j] - offset) / m2, -1.0, 1.0); }
    word |= dynIndex(u) << (b * 8u);
  }
  Sq[p.qa + w] = word;
}
