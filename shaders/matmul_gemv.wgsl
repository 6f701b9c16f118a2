// matmul gemv: C = alpha A Bᵀ (+ beta C) (+ bias) for few rows of A (decoding:
// M = batch, often 1), B stored [N, K] (a linear's weight, the head). The
// tiled kernels give each thread a block of 8-16 rows, so an M = 1 call does
// 8-16x the FMAs it needs; here the grid tiles only the columns.
//
// A workgroup of 64 threads covers MR rows (1, 2, 4 or 8: the host's pick for
// M, a pipeline constant; rows past M are clamped on load and not stored) and
// 4 * 64 / TK columns: TK threads share one block of 4 columns and split its k
// loop (thread lane reads chunks lane, lane + TK, ... of 4 values), so each
// weight is read exactly once with one vec4 (or one vec2<u32> packed) load,
// then the TK partial sums are added in workgroup memory. TK (a power of two
// <= 64, pipeline constant) is 1 on CPU adapters, where a barrier costs more
// than it saves, and 32 on GPUs, where 32 lanes reading consecutive chunks of
// one weight row make 512-byte coalesced reads.
//
// The loads of A and B (bindings 1, 2) are one marked region: matmul.ts swaps
// it for matmul_gemv_scalar.wgsl (any K, f32) or matmul_gemv_packed_b.wgsl
// (f16 / bf16 B). Here: K % 4 == 0 and the batch strides % 4 == 0.
//
// Same params and semantics as matmul.wgsl with TA = 0, TB = 1.
struct Params {
  M: u32, N: u32, K: u32, batch: u32,
  transA: u32, transB: u32, strideA: u32, strideB: u32,
  strideC: u32, hasBias: u32, alpha: f32, beta: f32,
}

override MR: u32 = 1u;
override TK: u32 = 1u;
const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> C: array<f32>;

// load region begin
@group(0) @binding(1) var<storage, read> A4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> B4: array<vec4<f32>>;

// Index of op(A)[m, 0] / op(B)[0, n] (B's stored row n) in the loads' units.
fn baseA(b: u32, m: u32) -> u32 { return (b * p.strideA + m * p.K) / 4u; }
fn baseB(b: u32, n: u32) -> u32 { return (b * p.strideB + n * p.K) / 4u; }
// Values k = 4 kk .. 4 kk + 3 of the row starting at i.
fn ldA(i: u32, kk: u32) -> vec4<f32> { return A4[i + kk]; }
fn ldB(i: u32, kk: u32) -> vec4<f32> { return B4[i + kk]; }
// load region end

// Partial sums, row r of the block in part[r * WG + thread]: 4 columns each.
var<workgroup> part: array<vec4<f32>, 512>;

fn store(b: u32, m: u32, n0: u32, v: vec4<f32>) {
  if (m >= p.M) { return; }
  let ci = b * p.strideC + m * p.N;
  for (var j = 0u; j < 4u; j++) {
    let n = n0 + j;
    if (n >= p.N) { return; }
    var x = p.alpha * v[j];
    if (p.beta != 0.0) { x += p.beta * C[ci + n]; }
    if (p.hasBias == 1u) { x += bias[n]; }
    C[ci + n] = x;
  }
}

// x . (B columns c0..c3) as a vec4 over the 4 columns.
fn dot4(x: vec4<f32>, c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(dot(x, c0), dot(x, c1), dot(x, c2), dot(x, c3));
}

@compute @workgroup_size(64)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let colsPerWg = 4u * (WG / TK);
  let blocksN = (p.N + colsPerWg - 1u) / colsPerWg;
  let t = wg.x + wg.y * nwg.x;
  let m0 = (t / blocksN) * MR;
  // Uniform across the workgroup: no barrier below is skipped by part of it.
  if (m0 >= p.M) { return; }
  let b = wg.z;
  let lane = tid % TK;
  let n0 = (t % blocksN) * colsPerWg + (tid / TK) * 4u;
  let K4 = (p.K + 3u) / 4u;

  // Rows and columns past the edge read the last one (their results are not stored).
  let lm = p.M - 1u;
  let ln = p.N - 1u;
  let j0 = baseB(b, min(n0, ln));
  let j1 = baseB(b, min(n0 + 1u, ln));
  let j2 = baseB(b, min(n0 + 2u, ln));
  let j3 = baseB(b, min(n0 + 3u, ln));
  let i0 = baseA(b, min(m0, lm));
  var i1 = 0u; var i2 = 0u; var i3 = 0u; var i4 = 0u; var i5 = 0u; var i6 = 0u; var i7 = 0u;
  if (MR > 1u) { i1 = baseA(b, min(m0 + 1u, lm)); }
  if (MR > 2u) { i2 = baseA(b, min(m0 + 2u, lm)); i3 = baseA(b, min(m0 + 3u, lm)); }
  if (MR > 4u) {
    i4 = baseA(b, min(m0 + 4u, lm)); i5 = baseA(b, min(m0 + 5u, lm));
    i6 = baseA(b, min(m0 + 6u, lm)); i7 = baseA(b, min(m0 + 7u, lm));
  }

  var r0 = vec4<f32>(0.0); var r1 = vec4<f32>(0.0); var r2 = vec4<f32>(0.0); var r3 = vec4<f32>(0.0);
  var r4 = vec4<f32>(0.0); var r5 = vec4<f32>(0.0); var r6 = vec4<f32>(0.0); var r7 = vec4<f32>(0.0);
  for (var kk = lane; kk < K4; kk += TK) {
    let c0 = ldB(j0, kk);
    let c1 = ldB(j1, kk);
    let c2 = ldB(j2, kk);
    let c3 = ldB(j3, kk);
    r0 += dot4(ldA(i0, kk), c0, c1, c2, c3);
    if (MR > 1u) { r1 += dot4(ldA(i1, kk), c0, c1, c2, c3); }
    if (MR > 2u) {
      r2 += dot4(ldA(i2, kk), c0, c1, c2, c3);
      r3 += dot4(ldA(i3, kk), c0, c1, c2, c3);
    }
    if (MR > 4u) {
      r4 += dot4(ldA(i4, kk), c0, c1, c2, c3);
      r5 += dot4(ldA(i5, kk), c0, c1, c2, c3);
      r6 += dot4(ldA(i6, kk), c0, c1, c2, c3);
      r7 += dot4(ldA(i7, kk), c0, c1, c2, c3);
    }
  }

  if (TK > 1u) {
    // Tree sum over the TK lanes of each column block: log2(TK) barriers.
    part[tid] = r0;
    if (MR > 1u) { part[WG + tid] = r1; }
    if (MR > 2u) { part[2u * WG + tid] = r2; part[3u * WG + tid] = r3; }
    if (MR > 4u) {
      part[4u * WG + tid] = r4; part[5u * WG + tid] = r5;
      part[6u * WG + tid] = r6; part[7u * WG + tid] = r7;
    }
    for (var s = TK / 2u; s > 0u; s /= 2u) {
      workgroupBarrier();
      if (lane < s) {
        for (var r = 0u; r < MR; r++) { part[r * WG + tid] += part[r * WG + tid + s]; }
      }
    }
    workgroupBarrier();
    if (lane != 0u) { return; }
    r0 = part[tid]; r1 = part[WG + tid]; r2 = part[2u * WG + tid]; r3 = part[3u * WG + tid];
    r4 = part[4u * WG + tid]; r5 = part[5u * WG + tid]; r6 = part[6u * WG + tid]; r7 = part[7u * WG + tid];
  }
  if (n0 >= p.N) { return; }
  store(b, m0, n0, r0);
  if (MR > 1u) { store(b, m0 + 1u, n0, r1); }
  if (MR > 2u) { store(b, m0 + 2u, n0, r2); store(b, m0 + 3u, n0, r3); }
  if (MR > 4u) {
    store(b, m0 + 4u, n0, r4); store(b, m0 + 5u, n0, r5);
    store(b, m0 + 6u, n0, r6); store(b, m0 + 7u, n0, r7);
  }
}
