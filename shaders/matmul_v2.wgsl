// matmul v2: register-tiled, no workgroup memory, no barriers. Each thread
// computes a 4x4 block of C with vec4 loads along whichever dimension of A
// and B is contiguous in memory, so every load brings 4 useful values and
// every 8 loads feed 64 FMAs. Chosen over v1 (workgroup-memory tiles) where
// the shapes allow: on SwiftShader barriers cost ~1 us per thread, and on
// real GPUs the 4x4 blocks still give 4x register reuse from L1.
//
// Preconditions (checked on the host): K % 4 == 0; M % 4 == 0 when transA;
// N % 4 == 0 when B is not transposed. Edge rows/columns are clamped on load
// and masked on store. Same params and semantics as matmul.wgsl.
struct Params {
  M: u32, N: u32, K: u32, batch: u32,
  transA: u32, transB: u32, strideA: u32, strideB: u32,
  strideC: u32, hasBias: u32, alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> C: array<f32>;

// Rows a[0..3] = A[m0+i, k0..k0+3] (op(A) coordinates).
fn loadA(b: u32, m0: u32, k0: u32) -> mat4x4<f32> {
  let base = b * p.strideA;
  if (p.transA == 1u) {
    // stored [K, M]: vec4 along m; columns of the result are k.
    let c0 = A[(base + (k0 + 0u) * p.M + m0) / 4u];
    let c1 = A[(base + (k0 + 1u) * p.M + m0) / 4u];
    let c2 = A[(base + (k0 + 2u) * p.M + m0) / 4u];
    let c3 = A[(base + (k0 + 3u) * p.M + m0) / 4u];
    return transpose(mat4x4<f32>(c0, c1, c2, c3));
  }
  let last = p.M - 1u;
  return mat4x4<f32>(
    A[(base + min(m0 + 0u, last) * p.K + k0) / 4u],
    A[(base + min(m0 + 1u, last) * p.K + k0) / 4u],
    A[(base + min(m0 + 2u, last) * p.K + k0) / 4u],
    A[(base + min(m0 + 3u, last) * p.K + k0) / 4u]);
}

// Rows b[kk] = B[k0+kk, n0..n0+3] (op(B) coordinates).
fn loadB(b: u32, k0: u32, n0: u32) -> mat4x4<f32> {
  let base = b * p.strideB;
  if (p.transB == 1u) {
    // stored [N, K]: vec4 along k.
    let last = p.N - 1u;
    let r0 = B[(base + min(n0 + 0u, last) * p.K + k0) / 4u];
    let r1 = B[(base + min(n0 + 1u, last) * p.K + k0) / 4u];
    let r2 = B[(base + min(n0 + 2u, last) * p.K + k0) / 4u];
    let r3 = B[(base + min(n0 + 3u, last) * p.K + k0) / 4u];
    return transpose(mat4x4<f32>(r0, r1, r2, r3));
  }
  return mat4x4<f32>(
    B[(base + (k0 + 0u) * p.N + n0) / 4u],
    B[(base + (k0 + 1u) * p.N + n0) / 4u],
    B[(base + (k0 + 2u) * p.N + n0) / 4u],
    B[(base + (k0 + 3u) * p.N + n0) / 4u]);
}

@compute @workgroup_size(8, 8, 1)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
  let b = gid.z;
  let m0 = gid.y * 4u;
  let n0 = gid.x * 4u;
  if (m0 >= p.M || n0 >= p.N) { return; }
  // acc[i] = row i of the 4x4 block: sum_k a[i][k] * bk[k].
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var k0 = 0u; k0 < p.K; k0 += 4u) {
    let a = loadA(b, m0, k0);
    let bk = loadB(b, k0, n0);
    // WGSL matrices are column-major: a[i] (column i) is row m0+i of the A
    // block over k, and bk's column kk is row k0+kk of the B block over n, so
    // bk * a[i] = sum_kk a[i][kk] * B[k0+kk, n0..n0+3].
    acc0 += bk * a[0];
    acc1 += bk * a[1];
    acc2 += bk * a[2];
    acc3 += bk * a[3];
  }
  let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + i;
    if (m >= p.M) { break; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + j;
      if (n >= p.N) { break; }
      let ci = b * p.strideC + m * p.N + n;
      var v = p.alpha * accs[i][j];
      if (p.beta != 0.0) { v += p.beta * C[ci]; }
      if (p.hasBias == 1u) { v += bias[n]; }
      C[ci] = v;
    }
  }
}
