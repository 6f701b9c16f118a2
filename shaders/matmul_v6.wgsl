// matmul v6: subgroup shuffles instead of workgroup memory, for GPUs with
// the `subgroups` feature. A workgroup of 64 threads covers 64 rows x 16
// columns of C; each thread owns one row and the 16 columns. Along k, in
// chunks of the subgroup size S, lane l loads row k0 + l of op(B)'s 16
// columns (four vec4s); then for j in 0..S-1 every lane takes row k0 + j
// from lane j with subgroupShuffle and multiplies it by its own A[m, k0 + j].
// op(B) is read from memory once per subgroup instead of once per thread,
// with no barrier and no workgroup memory. Every thread runs every shuffle
// (rows past M compute zeros and store nothing): shuffles need the whole
// subgroup, in uniform control flow. Layouts (TA, TB) are pipeline constants.
// The B side (binding, loads, the k loop that shares op(B) across lanes) is
// one marked region: matmul.ts swaps it for matmul_v6_packed_b.wgsl to read
// packed f16 / bf16 base weights.
//
// Same params and semantics as matmul.wgsl: C[b] = alpha op(A[b]) op(B[b]) + beta C[b] (+ bias).
// Any M, N, K and any subgroup size (a subgroup wider than 64 lanes uses its first 64).
enable subgroups;

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

// acc += op(A)[m, :] op(B)[:, n0 .. n0+15], in chunks of S rows of op(B).
fn accumulate(acc: ptr<function, array<vec4<f32>, 4>>, b: u32, m: u32, n0: u32, lane: u32, S: u32) {
  for (var k0 = 0u; k0 < p.K; k0 += S) {
    // This lane's row of the chunk: op(B)[k0 + lane, n0 .. n0 + 15].
    var row: array<vec4<f32>, 4>;
    for (var q = 0u; q < 4u; q++) {
      let n = n0 + q * 4u;
      row[q] = vec4<f32>(loadB(b, k0 + lane, n), loadB(b, k0 + lane, n + 1u), loadB(b, k0 + lane, n + 2u), loadB(b, k0 + lane, n + 3u));
    }
    for (var j = 0u; j < S; j++) {
      let a = loadA(b, m, k0 + j);
      (*acc)[0] += a * subgroupShuffle(row[0], j);
      (*acc)[1] += a * subgroupShuffle(row[1], j);
      (*acc)[2] += a * subgroupShuffle(row[2], j);
      (*acc)[3] += a * subgroupShuffle(row[3], j);
    }
  }
}
// packed-B region end

@compute @workgroup_size(64, 1, 1)
fn matmul(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) sgSize: u32,
) {
  // A subgroup wider than the workgroup has only 64 live lanes.
  let S = min(sgSize, 64u);
  let b = wg.z;
  let m = wg.y * 64u + tid;
  let n0 = wg.x * 16u;
  var acc: array<vec4<f32>, 4>;
  for (var q = 0u; q < 4u; q++) { acc[q] = vec4<f32>(0.0); }

  accumulate(&acc, b, m, n0, lane, S);

  if (m >= p.M) { return; }
  for (var j = 0u; j < 16u; j++) {
    let n = n0 + j;
    if (n >= p.N) { continue; }
    let ci = b * p.strideC + m * p.N + n;
    var v = p.alpha * acc[j / 4u][j % 4u];
    if (p.beta != 0.0) { v += p.beta * C[ci]; }
    if (p.hasBias == 1u) { v += bias[n]; }
    C[ci] = v;
  }
}
