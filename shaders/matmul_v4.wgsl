// matmul v4: each thread owns an RM x 16 block of C (RM = 8 or 16 rows of
// op(A), a pipeline constant; 16 columns of op(B)); no workgroup memory, no
// barriers, vec4 loads and stores. Per step of 4 along k: RM + 16 vec4 loads
// (A rows, B columns) feed RM * 64 FMAs. RM = 16 (256 accumulators) is for CPU
// adapters, where it measured 10-35% faster than 8; GPUs get RM = 8 so that
// the block stays within a thread's register budget (the rows 8..15 are then
// dead code, removed once the constant is substituted).
//
// Why, measured on SwiftShader (Subzero JIT, 4-wide SIMD over invocations):
// every storage access is a per-lane gather or scatter costing ~10 ns, and
// the JIT does not hoist loop-invariant address math, so the kernel
//  - computes every row's vec4 index once, before the k loop (v3 recomputed
//    clamped indices from uniforms each step: v4's layout alone was ~2x);
//  - takes the layouts (TA, TB) as pipeline constants;
//  - stores C as vec4 rows (one scatter per 4 outputs).
// 512x512x64 (A B^T): v2 ~60 ms, v3 8x4 ~25-35 ms, v4 ~12 ms under load;
// see matmul.ts for the per-shape numbers. The flat thread index walks the
// column tiles of one row tile first, so neighbouring invocations share A rows.
//
// Same params and semantics as matmul.wgsl: C[b] = alpha op(A[b]) op(B[b]) + beta C[b] (+ bias).
// Preconditions (checked on the host): K % 4 == 0, N % 4 == 0, M % 4 == 0
// when TA. Edge rows/columns are clamped on load and masked on store.
struct Params {
  M: u32, N: u32, K: u32, batch: u32,
  transA: u32, transB: u32, strideA: u32, strideB: u32,
  strideC: u32, hasBias: u32, alpha: f32, beta: f32,
}

override TA: u32 = 0u;
override TB: u32 = 1u;
override RM: u32 = 8u;
const RN: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> C4: array<vec4<f32>>;

// One row of the block: columns n0 + 4q .. n0 + 4q + 3 in c[q].
struct Row { c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32> }
// op(B)[k0..k0+3, n0..n0+15]: column j of block q is column n0 + 4q + j, as a vector over k.
struct Cols { q0: mat4x4<f32>, q1: mat4x4<f32>, q2: mat4x4<f32>, q3: mat4x4<f32> }

// x = op(A)[m, k0..k0+3]; x * Q = (x . Q[0], .., x . Q[3]).
fn fmaRow(r: ptr<function, Row>, x: vec4<f32>, y: Cols) {
  (*r).c0 += x * y.q0;
  (*r).c1 += x * y.q1;
  (*r).c2 += x * y.q2;
  (*r).c3 += x * y.q3;
}

fn store4(ci: u32, bi: u32, v: vec4<f32>) {
  var x = p.alpha * v;
  if (p.beta != 0.0) { x += p.beta * C4[ci]; }
  if (p.hasBias == 1u) { x += bias4[bi]; }
  C4[ci] = x;
}

fn storeRow(r: Row, b: u32, m: u32, n0: u32) {
  if (m >= p.M) { return; }
  let ci = (b * p.strideC + m * p.N + n0) / 4u;
  let bi = n0 / 4u;
  let nq = (p.N - n0) / 4u; // vec4 columns of this row inside C
  store4(ci, bi, r.c0);
  if (nq > 1u) { store4(ci + 1u, bi + 1u, r.c1); }
  if (nq > 2u) { store4(ci + 2u, bi + 2u, r.c2); }
  if (nq > 3u) { store4(ci + 3u, bi + 3u, r.c3); }
}

@compute @workgroup_size(64)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 64u;
  let b = gid.z;
  let tilesN = (p.N + RN - 1u) / RN;
  let m0 = (t / tilesN) * RM;
  let n0 = (t % tilesN) * RN;
  if (m0 >= p.M) { return; }
  let K4 = p.K / 4u;
  let M4 = p.M / 4u;
  let N4 = p.N / 4u;
  let baseA = b * p.strideA / 4u;
  let baseB = b * p.strideB / 4u;

  // vec4 index of op(A) row m0+i at k = 0 (TA = 0: rows clamped), or of
  // A's stored row k = 0 at column group m0/4 + h (TA = 1: groups clamped).
  let lm = p.M - 1u;
  var a0 = 0u; var a1 = 0u; var a2 = 0u; var a3 = 0u;
  var a4 = 0u; var a5 = 0u; var a6 = 0u; var a7 = 0u;
  var a8 = 0u; var a9 = 0u; var a10 = 0u; var a11 = 0u;
  var a12 = 0u; var a13 = 0u; var a14 = 0u; var a15 = 0u;
  if (TA == 0u) {
    a0 = baseA + min(m0, lm) * K4;
    a1 = baseA + min(m0 + 1u, lm) * K4;
    a2 = baseA + min(m0 + 2u, lm) * K4;
    a3 = baseA + min(m0 + 3u, lm) * K4;
    a4 = baseA + min(m0 + 4u, lm) * K4;
    a5 = baseA + min(m0 + 5u, lm) * K4;
    a6 = baseA + min(m0 + 6u, lm) * K4;
    a7 = baseA + min(m0 + 7u, lm) * K4;
    if (RM > 8u) {
      a8 = baseA + min(m0 + 8u, lm) * K4;
      a9 = baseA + min(m0 + 9u, lm) * K4;
      a10 = baseA + min(m0 + 10u, lm) * K4;
      a11 = baseA + min(m0 + 11u, lm) * K4;
      a12 = baseA + min(m0 + 12u, lm) * K4;
      a13 = baseA + min(m0 + 13u, lm) * K4;
      a14 = baseA + min(m0 + 14u, lm) * K4;
      a15 = baseA + min(m0 + 15u, lm) * K4;
    }
  } else {
    a0 = baseA + min(m0 / 4u, M4 - 1u);
    a1 = baseA + min(m0 / 4u + 1u, M4 - 1u);
    a2 = baseA + min(m0 / 4u + 2u, M4 - 1u);
    a3 = baseA + min(m0 / 4u + 3u, M4 - 1u);
  }
  // Likewise for B: op(B) column n0+j (TB = 1, rows of stored B clamped), or
  // stored row k = 0 at column group n0/4 + q (TB = 0, groups clamped).
  let ln = p.N - 1u;
  var b0 = 0u; var b1 = 0u; var b2 = 0u; var b3 = 0u;
  var b4 = 0u; var b5 = 0u; var b6 = 0u; var b7 = 0u;
  var b8 = 0u; var b9 = 0u; var b10 = 0u; var b11 = 0u;
  var b12 = 0u; var b13 = 0u; var b14 = 0u; var b15 = 0u;
  if (TB == 1u) {
    b0 = baseB + min(n0, ln) * K4;
    b1 = baseB + min(n0 + 1u, ln) * K4;
    b2 = baseB + min(n0 + 2u, ln) * K4;
    b3 = baseB + min(n0 + 3u, ln) * K4;
    b4 = baseB + min(n0 + 4u, ln) * K4;
    b5 = baseB + min(n0 + 5u, ln) * K4;
    b6 = baseB + min(n0 + 6u, ln) * K4;
    b7 = baseB + min(n0 + 7u, ln) * K4;
    b8 = baseB + min(n0 + 8u, ln) * K4;
    b9 = baseB + min(n0 + 9u, ln) * K4;
    b10 = baseB + min(n0 + 10u, ln) * K4;
    b11 = baseB + min(n0 + 11u, ln) * K4;
    b12 = baseB + min(n0 + 12u, ln) * K4;
    b13 = baseB + min(n0 + 13u, ln) * K4;
    b14 = baseB + min(n0 + 14u, ln) * K4;
    b15 = baseB + min(n0 + 15u, ln) * K4;
  } else {
    b0 = baseB + min(n0 / 4u, N4 - 1u);
    b1 = baseB + min(n0 / 4u + 1u, N4 - 1u);
    b2 = baseB + min(n0 / 4u + 2u, N4 - 1u);
    b3 = baseB + min(n0 / 4u + 3u, N4 - 1u);
  }

  let zero = Row(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
  var r0 = zero; var r1 = zero; var r2 = zero; var r3 = zero;
  var r4 = zero; var r5 = zero; var r6 = zero; var r7 = zero;
  var r8 = zero; var r9 = zero; var r10 = zero; var r11 = zero;
  var r12 = zero; var r13 = zero; var r14 = zero; var r15 = zero;
  // Offset of step k0 = 4 kk: kk along a row (TA/TB = 0 rows, 1 = columns),
  // or 4 kk stored rows of M4 / N4 vec4s.
  var oa = 0u;
  var ob = 0u;
  let sa = select(1u, 4u * M4, TA == 1u);
  let sb = select(1u, 4u * N4, TB == 0u);
  for (var kk = 0u; kk < K4; kk++) {
    var y: Cols;
    if (TB == 1u) {
      y = Cols(
        mat4x4<f32>(B[b0 + ob], B[b1 + ob], B[b2 + ob], B[b3 + ob]),
        mat4x4<f32>(B[b4 + ob], B[b5 + ob], B[b6 + ob], B[b7 + ob]),
        mat4x4<f32>(B[b8 + ob], B[b9 + ob], B[b10 + ob], B[b11 + ob]),
        mat4x4<f32>(B[b12 + ob], B[b13 + ob], B[b14 + ob], B[b15 + ob]));
    } else {
      let o1 = ob + N4;
      let o2 = o1 + N4;
      let o3 = o2 + N4;
      y = Cols(
        transpose(mat4x4<f32>(B[b0 + ob], B[b0 + o1], B[b0 + o2], B[b0 + o3])),
        transpose(mat4x4<f32>(B[b1 + ob], B[b1 + o1], B[b1 + o2], B[b1 + o3])),
        transpose(mat4x4<f32>(B[b2 + ob], B[b2 + o1], B[b2 + o2], B[b2 + o3])),
        transpose(mat4x4<f32>(B[b3 + ob], B[b3 + o1], B[b3 + o2], B[b3 + o3])));
    }
    if (TA == 0u) {
      fmaRow(&r0, A[a0 + oa], y);
      fmaRow(&r1, A[a1 + oa], y);
      fmaRow(&r2, A[a2 + oa], y);
      fmaRow(&r3, A[a3 + oa], y);
      fmaRow(&r4, A[a4 + oa], y);
      fmaRow(&r5, A[a5 + oa], y);
      fmaRow(&r6, A[a6 + oa], y);
      fmaRow(&r7, A[a7 + oa], y);
      if (RM > 8u) {
        fmaRow(&r8, A[a8 + oa], y);
        fmaRow(&r9, A[a9 + oa], y);
        fmaRow(&r10, A[a10 + oa], y);
        fmaRow(&r11, A[a11 + oa], y);
        fmaRow(&r12, A[a12 + oa], y);
        fmaRow(&r13, A[a13 + oa], y);
        fmaRow(&r14, A[a14 + oa], y);
        fmaRow(&r15, A[a15 + oa], y);
      }
    } else {
      let o1 = oa + M4;
      let o2 = o1 + M4;
      let o3 = o2 + M4;
      let xa = transpose(mat4x4<f32>(A[a0 + oa], A[a0 + o1], A[a0 + o2], A[a0 + o3]));
      let xb = transpose(mat4x4<f32>(A[a1 + oa], A[a1 + o1], A[a1 + o2], A[a1 + o3]));
      fmaRow(&r0, xa[0], y);
      fmaRow(&r1, xa[1], y);
      fmaRow(&r2, xa[2], y);
      fmaRow(&r3, xa[3], y);
      fmaRow(&r4, xb[0], y);
      fmaRow(&r5, xb[1], y);
      fmaRow(&r6, xb[2], y);
      fmaRow(&r7, xb[3], y);
      if (RM > 8u) {
        let xc = transpose(mat4x4<f32>(A[a2 + oa], A[a2 + o1], A[a2 + o2], A[a2 + o3]));
        let xd = transpose(mat4x4<f32>(A[a3 + oa], A[a3 + o1], A[a3 + o2], A[a3 + o3]));
        fmaRow(&r8, xc[0], y);
        fmaRow(&r9, xc[1], y);
        fmaRow(&r10, xc[2], y);
        fmaRow(&r11, xc[3], y);
        fmaRow(&r12, xd[0], y);
        fmaRow(&r13, xd[1], y);
        fmaRow(&r14, xd[2], y);
        fmaRow(&r15, xd[3], y);
      }
    }
    oa += sa;
    ob += sb;
  }
  storeRow(r0, b, m0, n0);
  storeRow(r1, b, m0 + 1u, n0);
  storeRow(r2, b, m0 + 2u, n0);
  storeRow(r3, b, m0 + 3u, n0);
  storeRow(r4, b, m0 + 4u, n0);
  storeRow(r5, b, m0 + 5u, n0);
  storeRow(r6, b, m0 + 6u, n0);
  storeRow(r7, b, m0 + 7u, n0);
  if (RM > 8u) {
    storeRow(r8, b, m0 + 8u, n0);
    storeRow(r9, b, m0 + 9u, n0);
    storeRow(r10, b, m0 + 10u, n0);
    storeRow(r11, b, m0 + 11u, n0);
    storeRow(r12, b, m0 + 12u, n0);
    storeRow(r13, b, m0 + 13u, n0);
    storeRow(r14, b, m0 + 14u, n0);
    storeRow(r15, b, m0 + 15u, n0);
  }
}
