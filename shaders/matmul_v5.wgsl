// matmul v5: workgroup-memory tiles with 8x8 register blocks, for GPUs.
// A 64x64 tile of C per workgroup of 64 threads (8x8); each thread owns an
// 8x8 block of it. Per step of BK = 16 along k the workgroup stages a 64x16
// tile of op(A) and a 16x64 tile of op(B) in workgroup memory (16 loads per
// thread each, coalesced along the stored layout's contiguous dimension);
// each thread then reads 2 + 2 vec4s per k and does 64 FMAs: twice v1's
// arithmetic per workgroup-memory read (v1: 4x4 blocks, 16 FMAs per 2 reads).
// Layouts (TA, TB) are pipeline constants, as in v4. The B side (binding,
// loads, staging) is one marked region: matmul.ts swaps it for
// matmul_v5_packed_b.wgsl to read packed f16 / bf16 base weights.
//
// Same params and semantics as matmul.wgsl: C[b] = alpha op(A[b]) op(B[b]) + beta C[b] (+ bias).
// Any M, N, K: loads outside the matrices read zero, stores are masked.
struct Params {
  M: u32, N: u32, K: u32, batch: u32,
  transA: u32, transB: u32, strideA: u32, strideB: u32,
  strideC: u32, hasBias: u32, alpha: f32, beta: f32,
}

override TA: u32 = 0u;
override TB: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> C: array<f32>;

const TS: u32 = 64u;
const BK: u32 = 16u;

// As[k * 16 + m / 4][m % 4]: column k of the A tile, four rows per vec4; Bs likewise for B's columns.
var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;

fn loadA(b: u32, m: u32, k: u32) -> f32 {
  if (m >= p.M || k >= p.K) { return 0.0; }
  if (TA == 1u) { return A[b * p.strideA + k * p.M + m]; }
  return A[b * p.strideA + m * p.K + k];
}

// packed-B region begin
@group(0) @binding(2) var<storage, read> B: array<f32>;

fn loadB(b: u32, k: u32, n: u32) -> f32 {
  if (n >= p.N || k >= p.K) { return 0.0; }
  if (TB == 1u) { return B[b * p.strideB + n * p.K + k]; }
  return B[b * p.strideB + k * p.N + n];
}

// Bs <- op(B)[k0 .. k0+15, n0 .. n0+63]: 16 loads per thread, consecutive
// threads along B's stored rows.
fn stageB(b: u32, k0: u32, n0: u32, tid: u32) {
  for (var r = 0u; r < 16u; r++) {
    let idx = tid + r * 64u;
    var kb: u32; var nn: u32;
    if (TB == 1u) { nn = idx / BK; kb = idx % BK; } else { kb = idx / TS; nn = idx % TS; }
    Bs[kb * 16u + nn / 4u][nn % 4u] = loadB(b, k0 + kb, n0 + nn);
  }
}
// packed-B region end

@compute @workgroup_size(64, 1, 1)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let b = wg.z;
  let m0 = wg.y * TS;
  let n0 = wg.x * TS;
  let tx = tid % 8u; // columns tx*8 .. tx*8+7 of the tile
  let ty = tid / 8u; // rows ty*8 .. ty*8+7
  // acc[2i + h]: row ty*8 + i, columns tx*8 + 4h .. +3.
  var acc: array<vec4<f32>, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }

  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    for (var r = 0u; r < 16u; r++) {
      let idx = tid + r * 64u;
      var kk: u32; var mm: u32;
      if (TA == 1u) { kk = idx / TS; mm = idx % TS; } else { mm = idx / BK; kk = idx % BK; }
      As[kk * 16u + mm / 4u][mm % 4u] = loadA(b, m0 + mm, k0 + kk);
    }
    stageB(b, k0, n0, tid);
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let a0 = As[kk * 16u + ty * 2u];
      let a1 = As[kk * 16u + ty * 2u + 1u];
      let b0 = Bs[kk * 16u + tx * 2u];
      let b1 = Bs[kk * 16u + tx * 2u + 1u];
      acc[0] += a0.x * b0; acc[1] += a0.x * b1;
      acc[2] += a0.y * b0; acc[3] += a0.y * b1;
      acc[4] += a0.z * b0; acc[5] += a0.z * b1;
      acc[6] += a0.w * b0; acc[7] += a0.w * b1;
      acc[8] += a1.x * b0; acc[9] += a1.x * b1;
      acc[10] += a1.y * b0; acc[11] += a1.y * b1;
      acc[12] += a1.z * b0; acc[13] += a1.z * b1;
      acc[14] += a1.w * b0; acc[15] += a1.w * b1;
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < 8u; i++) {
    let m = m0 + ty * 8u + i;
    if (m >= p.M) { continue; }
    for (var j = 0u; j < 8u; j++) {
      let n = n0 + tx * 8u + j;
      if (n >= p.N) { continue; }
      let ci = b * p.strideC + m * p.N + n;
      var v = p.alpha * acc[i * 2u + j / 4u][j % 4u];
      if (p.beta != 0.0) { v += p.beta * C[ci]; }
      if (p.hasBias == 1u) { v += bias[n]; }
      C[ci] = v;
    }
  }
}
