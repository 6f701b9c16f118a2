// C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b] (+ bias[n])
// op(A) is [M,K]: stored [M,K], or [K,M] when transA. op(B) is [K,N]:
// stored [K,N], or [N,K] when transB. Batch strides in elements (0 broadcasts).
// Tiling: 64x64 output tile per workgroup, K in steps of 16, 16x16 threads,
// each computing a 4x4 block from vec4 reads of workgroup memory.

struct Params {
  M: u32, N: u32, K: u32, batch: u32,
  transA: u32, transB: u32, strideA: u32, strideB: u32,
  strideC: u32, hasBias: u32, alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> C: array<f32>;

const TS: u32 = 64u;
const BK: u32 = 16u;

// As[k][m/4] holds rows m..m+3 of column k of the A tile; Bs likewise for B.
var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;

fn loadA(b: u32, m: u32, k: u32) -> f32 {
  if (m >= p.M || k >= p.K) { return 0.0; }
  if (p.transA == 1u) { return A[b * p.strideA + k * p.M + m]; }
  return A[b * p.strideA + m * p.K + k];
}

fn loadB(b: u32, k: u32, n: u32) -> f32 {
  if (n >= p.N || k >= p.K) { return 0.0; }
  if (p.transB == 1u) { return B[b * p.strideB + n * p.K + k]; }
  return B[b * p.strideB + k * p.N + n];
}

@compute @workgroup_size(16, 16, 1)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let b = wg.z;
  let m0 = wg.y * TS;
  let n0 = wg.x * TS;
  let tid = lid.y * 16u + lid.x;
  var acc: array<vec4<f32>, 4>;
  for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }

  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    for (var r = 0u; r < 4u; r++) {
      let idx = tid + r * 256u;
      // A: consecutive threads walk k when A is [M,K] (contiguous in k), m when transposed.
      var kk: u32; var mm: u32;
      if (p.transA == 1u) { kk = idx / TS; mm = idx % TS; } else { mm = idx / BK; kk = idx % BK; }
      As[kk * 16u + mm / 4u][mm % 4u] = loadA(b, m0 + mm, k0 + kk);
      var kb: u32; var nn: u32;
      if (p.transB == 1u) { nn = idx / BK; kb = idx % BK; } else { kb = idx / TS; nn = idx % TS; }
      Bs[kb * 16u + nn / 4u][nn % 4u] = loadB(b, k0 + kb, n0 + nn);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let a = As[kk * 16u + lid.y];
      let bv = Bs[kk * 16u + lid.x];
      acc[0] += a.x * bv;
      acc[1] += a.y * bv;
      acc[2] += a.z * bv;
      acc[3] += a.w * bv;
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y * 4u + i;
    if (m >= p.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x * 4u + j;
      if (n >= p.N) { continue; }
      let ci = b * p.strideC + m * p.N + n;
      var v = p.alpha * acc[i][j];
      if (p.beta != 0.0) { v += p.beta * C[ci]; }
      if (p.hasBias == 1u) { v += bias[n]; }
      C[ci] = v;
    }
  }
}

// Sum over the first dimension: out[n] (+)= sum_m X[m, n]. Used for bias gradients.
struct SumParams { M: u32, N: u32, accumulate: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> sp: SumParams;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> S: array<f32>;

@compute @workgroup_size(64)
fn sum_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = gid.x;
  if (n >= sp.N) { return; }
  var s = 0.0;
  for (var m = 0u; m < sp.M; m++) { s += X[m * sp.N + n]; }
  if (sp.accumulate == 1u) { s += S[n]; }
  S[n] = s;
}
