// gemv's load region for any K (f32 A and B, rows not vec4-aligned): four
// scalar loads per chunk, the chunk past K zero.
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;

fn baseA(b: u32, m: u32) -> u32 { return b * p.strideA + m * p.K; }
fn baseB(b: u32, n: u32) -> u32 { return b * p.strideB + n * p.K; }
fn ldA(i: u32, kk: u32) -> vec4<f32> {
  let k = 4u * kk;
  if (k + 4u <= p.K) { return vec4<f32>(A[i + k], A[i + k + 1u], A[i + k + 2u], A[i + k + 3u]); }
  var v = vec4<f32>(0.0);
  for (var j = 0u; k + j < p.K; j++) { v[j] = A[i + k + j]; }
  return v;
}
fn ldB(i: u32, kk: u32) -> vec4<f32> {
  let k = 4u * kk;
  if (k + 4u <= p.K) { return vec4<f32>(B[i + k], B[i + k + 1u], B[i + k + 2u], B[i + k + 3u]); }
  var v = vec4<f32>(0.0);
  for (var j = 0u; k + j < p.K; j++) { v[j] = B[i + k + j]; }
  return v;
}
