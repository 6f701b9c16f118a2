// matmul v3: v2's register tiles (no workgroup memory, no barriers, vec4
// loads) with three changes, each measured on SwiftShader (CPU Vulkan):
//  - transA / transB are pipeline override constants TA / TB, so each of the
//    four layouts is its own pipeline with straight-line loads (v2 branched on
//    uniforms inside the k loop and went through transposed mat4x4 values);
//  - each thread owns an 8x4 block of C (8 rows of op(A), 4 columns of
//    op(B)): 12 vec4 loads feed 128 FMAs per step of 4 along k;
//  - the store is unrolled, with no dynamically indexed private arrays.
// 512x64x64 (A B^T): v2 ~7 ms, v3 ~2.5 ms; 512x512x64: v2 ~60 ms, v3 ~20 ms.
// Now used only where N % 4 != 0 (v4 needs vec4 rows of C); see matmul_v4.wgsl.
//
// Same params and semantics as matmul.wgsl: C[b] = alpha op(A[b]) op(B[b]) + beta C[b] (+ bias).
// Preconditions (checked on the host): K % 4 == 0; M % 4 == 0 when TA;
// N % 4 == 0 when not TB. Edge rows/columns are clamped on load and masked on store.
struct Params {
  M: u32, N: u32, K: u32, batch: u32,
  transA: u32, transB: u32, strideA: u32, strideB: u32,
  strideC: u32, hasBias: u32, alpha: f32, beta: f32,
}

override TA: u32 = 0u;
override TB: u32 = 1u;
const RM: u32 = 8u;
const RN: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> C: array<f32>;

// Columns y[j] = op(B)[k0..k0+3, n0+j] as a matrix; x * Y = (x . y[0], .., x . y[3]).
fn loadB(baseB: u32, k0: u32, n0: u32) -> mat4x4<f32> {
  if (TB == 1u) {
    // stored [N, K]: vec4 along k, rows clamped.
    let ln = p.N - 1u;
    return mat4x4<f32>(
      B[(baseB + min(n0, ln) * p.K + k0) / 4u],
      B[(baseB + min(n0 + 1u, ln) * p.K + k0) / 4u],
      B[(baseB + min(n0 + 2u, ln) * p.K + k0) / 4u],
      B[(baseB + min(n0 + 3u, ln) * p.K + k0) / 4u]);
  }
  // stored [K, N]: vec4 along n (N % 4 == 0, n0 < N).
  let i = (baseB + k0 * p.N + n0) / 4u;
  let s = p.N / 4u;
  return transpose(mat4x4<f32>(B[i], B[i + s], B[i + 2u * s], B[i + 3u * s]));
}

// Columns x[i] = op(A)[m0+i, k0..k0+3], i = 0..3.
fn loadA(baseA: u32, m0: u32, k0: u32) -> mat4x4<f32> {
  if (TA == 1u) {
    // stored [K, M]: vec4 along m (M % 4 == 0); a block past M is clamped to the last one and masked on store.
    let i = (baseA + k0 * p.M + min(m0, p.M - 4u)) / 4u;
    let s = p.M / 4u;
    return transpose(mat4x4<f32>(A[i], A[i + s], A[i + 2u * s], A[i + 3u * s]));
  }
  let lm = p.M - 1u;
  return mat4x4<f32>(
    A[(baseA + min(m0, lm) * p.K + k0) / 4u],
    A[(baseA + min(m0 + 1u, lm) * p.K + k0) / 4u],
    A[(baseA + min(m0 + 2u, lm) * p.K + k0) / 4u],
    A[(baseA + min(m0 + 3u, lm) * p.K + k0) / 4u]);
}

fn storeRow(b: u32, m: u32, n0: u32, v: vec4<f32>) {
  if (m >= p.M) { return; }
  let ci = b * p.strideC + m * p.N + n0;
  let last = min(4u, p.N - n0);
  for (var j = 0u; j < last; j++) {
    var x = p.alpha * v[j];
    if (p.beta != 0.0) { x += p.beta * C[ci + j]; }
    if (p.hasBias == 1u) { x += bias[n0 + j]; }
    C[ci + j] = x;
  }
}

// The 8x4 block of C at (m0, n0): rows c[0..7] as vec4 over n.
struct Block { c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>, c4: vec4<f32>, c5: vec4<f32>, c6: vec4<f32>, c7: vec4<f32> }

fn block(b: u32, m0: u32, n0: u32) -> Block {
  let baseA = b * p.strideA;
  let baseB = b * p.strideB;
  var c0 = vec4<f32>(0.0);
  var c1 = vec4<f32>(0.0);
  var c2 = vec4<f32>(0.0);
  var c3 = vec4<f32>(0.0);
  var c4 = vec4<f32>(0.0);
  var c5 = vec4<f32>(0.0);
  var c6 = vec4<f32>(0.0);
  var c7 = vec4<f32>(0.0);
  for (var k0 = 0u; k0 < p.K; k0 += 4u) {
    let y = loadB(baseB, k0, n0);
    let xa = loadA(baseA, m0, k0);
    let xb = loadA(baseA, m0 + 4u, k0);
    c0 += xa[0] * y;
    c1 += xa[1] * y;
    c2 += xa[2] * y;
    c3 += xa[3] * y;
    c4 += xb[0] * y;
    c5 += xb[1] * y;
    c6 += xb[2] * y;
    c7 += xb[3] * y;
  }
  return Block(c0, c1, c2, c3, c4, c5, c6, c7);
}

@compute @workgroup_size(8, 8, 1)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
  let b = gid.z;
  let m0 = gid.y * RM;
  let n0 = gid.x * RN;
  if (m0 >= p.M || n0 >= p.N) { return; }
  let r = block(b, m0, n0);
  storeRow(b, m0, n0, r.c0);
  storeRow(b, m0 + 1u, n0, r.c1);
  storeRow(b, m0 + 2u, n0, r.c2);
  storeRow(b, m0 + 3u, n0, r.c3);
  storeRow(b, m0 + 4u, n0, r.c4);
  storeRow(b, m0 + 5u, n0, r.c5);
  storeRow(b, m0 + 6u, n0, r.c6);
  storeRow(b, m0 + 7u, n0, r.c7);
}
