// OFT (METHODS.md §9): block-diagonal rotations from skew-symmetric blocks.
//
// Legend: nb stored blocks, b block size, m = b(b−1)/2 parameters per block,
// T rows (tokens) of the rotated input, F = r·b its features, r blocks per row.
//
//   Q_k = skew(θ_k):  Q[i][j] = θ[tri(i,j)] (i < j), Q[j][i] = −Q[i][j], zero diagonal
//   Cayley–Neumann:   R = Σ c_j Q^j, evaluated by Horner as small batched matmuls (bmm)
//   exact Cayley:     M = (I + Q)⁻¹,  R = (I − Q) M = 2M − I
//   rotation:         y_k = x_k R_k  (row-vector times matrix, per block of b features)
//
// Every kernel is one thread per output element (or per block) with no
// workgroup barriers: the shapes are small and SwiftShader charges per barrier.
// Grids are 1-D or 2-D of 64-thread workgroups: i = gid.x + gid.y · nwg.x · 64.

// Offset of (i, j), i < j, in the row-major strict upper triangle of a b×b block.
fn tri(i: u32, j: u32, b: u32) -> u32 {
  return i * b - (i * (i + 1u)) / 2u + (j - i - 1u);
}

// ---- skew: θ [nb, m] → Q [nb, b, b] ------------------------------------------
struct SkewParams { nb: u32, b: u32, m: u32, _p: u32 }
@group(0) @binding(0) var<uniform> sp: SkewParams;
@group(0) @binding(1) var<storage, read> skewTheta: array<f32>;
@group(0) @binding(2) var<storage, read_write> skewQ: array<f32>;

@compute @workgroup_size(64)
fn skew_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  let bb = sp.b * sp.b;
  if (idx >= sp.nb * bb) { return; }
  let blk = idx / bb;
  let i = (idx % bb) / sp.b;
  let j = idx % sp.b;
  var v = 0.0;
  if (i < j) { v = skewTheta[blk * sp.m + tri(i, j, sp.b)]; }
  if (i > j) { v = -skewTheta[blk * sp.m + tri(j, i, sp.b)]; }
  skewQ[idx] = v;
}

// dθ[tri(i,j)] += dQ[i][j] − dQ[j][i]; one thread per (block, i < j).
@group(0) @binding(1) var<storage, read> skewDQ: array<f32>;
@group(0) @binding(2) var<storage, read_write> skewDTheta: array<f32>;

@compute @workgroup_size(64)
fn skew_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  let bb = sp.b * sp.b;
  if (idx >= sp.nb * bb) { return; }
  let blk = idx / bb;
  let i = (idx % bb) / sp.b;
  let j = idx % sp.b;
  if (i >= j) { return; }
  skewDTheta[blk * sp.m + tri(i, j, sp.b)] += skewDQ[idx] - skewDQ[blk * bb + j * sp.b + i];
}

// ---- bmm: C = alpha · op(A) op(B) + beta · C + diag · I, per block -------------
// op(B) = I when bIsI = 1 (then B is not read). All matrices b×b, nb of them.
struct BmmParams { nb: u32, b: u32, transA: u32, transB: u32, bIsI: u32, _p0: u32, _p1: u32, _p2: u32, alpha: f32, beta: f32, diag: f32, _p3: u32 }
@group(0) @binding(0) var<uniform> bp: BmmParams;
@group(0) @binding(1) var<storage, read> bmmA: array<f32>;
@group(0) @binding(2) var<storage, read> bmmB: array<f32>;
@group(0) @binding(3) var<storage, read_write> bmmC: array<f32>;

@compute @workgroup_size(64)
fn bmm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  let b = bp.b;
  let bb = b * b;
  if (idx >= bp.nb * bb) { return; }
  let base = (idx / bb) * bb;
  let i = (idx % bb) / b;
  let j = idx % b;
  var s = 0.0;
  if (bp.bIsI == 1u) {
    s = select(bmmA[base + i * b + j], bmmA[base + j * b + i], bp.transA == 1u);
  } else if (bp.alpha != 0.0) {
    // Strides of op(A) row i and op(B) column j (uniform branches, one load each).
    var ao = base + i * b;
    var as_ = 1u;
    if (bp.transA == 1u) { ao = base + i; as_ = b; }
    var bo = base + j;
    var bs = b;
    if (bp.transB == 1u) { bo = base + j * b; bs = 1u; }
    for (var p = 0u; p < b; p++) { s += bmmA[ao + p * as_] * bmmB[bo + p * bs]; }
  }
  var c = bp.alpha * s + select(0.0, bp.diag, i == j);
  if (bp.beta != 0.0) { c += bp.beta * bmmC[idx]; }
  bmmC[idx] = c;
}

// ---- exact Cayley: M = (I + Q)⁻¹ and R = 2M − I, one thread per block -----------
// Gauss–Jordan without pivoting: I + Q has the identity as symmetric part
// (xᵀ(I+Q)x = |x|² > 0), so every pivot (a Schur complement's diagonal) is ≥ 1.
struct CayleyParams { nb: u32, b: u32, m: u32, _p: u32 }
@group(0) @binding(0) var<uniform> cp: CayleyParams;
@group(0) @binding(1) var<storage, read> cayTheta: array<f32>;
@group(0) @binding(2) var<storage, read_write> cayWork: array<f32>;
@group(0) @binding(3) var<storage, read_write> cayM: array<f32>;
@group(0) @binding(4) var<storage, read_write> cayR: array<f32>;

@compute @workgroup_size(64)
fn cayley_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let blk = gid.x + gid.y * nwg.x * 64u;
  if (blk >= cp.nb) { return; }
  let b = cp.b;
  let base = blk * b * b;
  for (var i = 0u; i < b; i++) {
    for (var j = 0u; j < b; j++) {
      var q = 0.0;
      if (i < j) { q = cayTheta[blk * cp.m + tri(i, j, b)]; }
      if (i > j) { q = -cayTheta[blk * cp.m + tri(j, i, b)]; }
      cayWork[base + i * b + j] = q + select(0.0, 1.0, i == j);
      cayM[base + i * b + j] = select(0.0, 1.0, i == j);
    }
  }
  for (var p = 0u; p < b; p++) {
    let inv = 1.0 / cayWork[base + p * b + p];
    for (var c = p; c < b; c++) { cayWork[base + p * b + c] *= inv; }
    for (var c = 0u; c < b; c++) { cayM[base + p * b + c] *= inv; }
    for (var i = 0u; i < b; i++) {
      if (i == p) { continue; }
      let f = cayWork[base + i * b + p];
      if (f == 0.0) { continue; }
      for (var c = p; c < b; c++) { cayWork[base + i * b + c] -= f * cayWork[base + p * b + c]; }
      for (var c = 0u; c < b; c++) { cayM[base + i * b + c] -= f * cayM[base + p * b + c]; }
    }
  }
  for (var i = 0u; i < b; i++) {
    for (var j = 0u; j < b; j++) {
      cayR[base + i * b + j] = 2.0 * cayM[base + i * b + j] - select(0.0, 1.0, i == j);
    }
  }
}

// ---- rotation: y[t, k·b + c] (+)= Σ_j x[t, k·b + j] · R_k[j][c]  (trans: R_k[c][j]) ----
// nR = r (one R per block) or 1 (block_share: every block uses R_0).
struct RotParams { T: u32, F: u32, b: u32, nR: u32, trans: u32, acc: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> rp: RotParams;
@group(0) @binding(1) var<storage, read> rotX: array<f32>;
@group(0) @binding(2) var<storage, read> rotR: array<f32>;
@group(0) @binding(3) var<storage, read_write> rotY: array<f32>;

@compute @workgroup_size(64)
fn rotate_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  if (idx >= rp.T * rp.F) { return; }
  let b = rp.b;
  let t = idx / rp.F;
  let f = idx % rp.F;
  let k = f / b;
  let c = f % b;
  let rBase = select(k, 0u, rp.nR == 1u) * b * b;
  let xBase = t * rp.F + k * b;
  var ro = rBase + c;
  var rs = b;
  if (rp.trans == 1u) { ro = rBase + c * b; rs = 1u; }
  var s = 0.0;
  for (var j = 0u; j < b; j++) { s += rotX[xBase + j] * rotR[ro + j * rs]; }
  if (rp.acc == 1u) { s += rotY[idx]; }
  rotY[idx] = s;
}

// dR_{kR}[j][c] += Σ_t Σ_{k → kR} x[t, k·b + j] · dy[t, k·b + c]   (stored at [c][j] when trans)
@group(0) @binding(1) var<storage, read> rgX: array<f32>;
@group(0) @binding(2) var<storage, read> rgDY: array<f32>;
@group(0) @binding(3) var<storage, read_write> rgDR: array<f32>;

@compute @workgroup_size(64)
fn rotate_backward_r(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  let b = rp.b;
  let bb = b * b;
  if (idx >= rp.nR * bb) { return; }
  let kR = idx / bb;
  let j = (idx % bb) / b;
  let c = idx % b;
  let r = rp.F / b;
  var k0 = kR;
  var k1 = kR + 1u;
  if (rp.nR == 1u) { k0 = 0u; k1 = r; }
  var s = 0.0;
  for (var t = 0u; t < rp.T; t++) {
    for (var k = k0; k < k1; k++) {
      let o = t * rp.F + k * b;
      s += rgX[o + j] * rgDY[o + c];
    }
  }
  let dst = select(idx, kR * bb + c * b + j, rp.trans == 1u);
  rgDR[dst] += s;
}

// ---- COFT: project each block onto the Frobenius ball ‖Q_k‖ ≤ eps, in place ----
// ‖Q_k‖_F² = 2 Σ θ_k² (each parameter appears twice, ±).
struct CoftParams { nb: u32, m: u32, eps: f32, _p: u32 }
@group(0) @binding(0) var<uniform> cfp: CoftParams;
@group(0) @binding(1) var<storage, read_write> coftTheta: array<f32>;

@compute @workgroup_size(64)
fn coft_project(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let blk = gid.x + gid.y * nwg.x * 64u;
  if (blk >= cfp.nb) { return; }
  var ss = 0.0;
  for (var p = 0u; p < cfp.m; p++) {
    let v = coftTheta[blk * cfp.m + p];
    ss += v * v;
  }
  let norm = sqrt(2.0 * ss);
  if (norm <= cfp.eps) { return; }
  let scale = cfp.eps / norm;
  for (var p = 0u; p < cfp.m; p++) { coftTheta[blk * cfp.m + p] *= scale; }
}

// ---- vec4 versions (b % 4 == 0): one thread per 4×4 output tile ------------------
// Same math as above. On SwiftShader every storage access costs about the same
// whatever its width, and on real GPUs 4×4 register tiles cut loads 4–8×.
// A tile of op(M) is held as mat4x4 whose column q is row q of the tile; a tile
// stored transposed is loaded row-wise and transposed in registers.

@group(0) @binding(1) var<storage, read> bmmA4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bmmB4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> bmmC4: array<vec4<f32>>;

// Rows q of the 4×4 tile (row block rt, column block ct) of op(M), M b×b at vec4 offset base.
fn tileA(base: u32, b4: u32, rt: u32, ct: u32, trans: u32) -> mat4x4<f32> {
  if (trans == 0u) {
    return mat4x4<f32>(bmmA4[base + (rt * 4u) * b4 + ct], bmmA4[base + (rt * 4u + 1u) * b4 + ct],
                       bmmA4[base + (rt * 4u + 2u) * b4 + ct], bmmA4[base + (rt * 4u + 3u) * b4 + ct]);
  }
  return transpose(mat4x4<f32>(bmmA4[base + (ct * 4u) * b4 + rt], bmmA4[base + (ct * 4u + 1u) * b4 + rt],
                               bmmA4[base + (ct * 4u + 2u) * b4 + rt], bmmA4[base + (ct * 4u + 3u) * b4 + rt]));
}

fn tileB(base: u32, b4: u32, rt: u32, ct: u32, trans: u32) -> mat4x4<f32> {
  if (trans == 0u) {
    return mat4x4<f32>(bmmB4[base + (rt * 4u) * b4 + ct], bmmB4[base + (rt * 4u + 1u) * b4 + ct],
                       bmmB4[base + (rt * 4u + 2u) * b4 + ct], bmmB4[base + (rt * 4u + 3u) * b4 + ct]);
  }
  return transpose(mat4x4<f32>(bmmB4[base + (ct * 4u) * b4 + rt], bmmB4[base + (ct * 4u + 1u) * b4 + rt],
                               bmmB4[base + (ct * 4u + 2u) * b4 + rt], bmmB4[base + (ct * 4u + 3u) * b4 + rt]));
}

@compute @workgroup_size(64)
fn bmm4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  let b4 = bp.b / 4u;
  let tiles = b4 * b4;
  if (idx >= bp.nb * tiles) { return; }
  let base = (idx / tiles) * bp.b * b4;
  let it = (idx % tiles) / b4;
  let jt = idx % b4;
  // c[q] = row it·4 + q of the C tile, columns jt·4 .. jt·4 + 3.
  var c = mat4x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
  if (bp.alpha != 0.0) {
    for (var pt = 0u; pt < b4; pt++) {
      let a = tileA(base, b4, it, pt, bp.transA);
      let bm = tileB(base, b4, pt, jt, bp.transB);
      c += mat4x4<f32>(bm * a[0], bm * a[1], bm * a[2], bm * a[3]);
    }
  }
  for (var q = 0u; q < 4u; q++) {
    let o = base + (it * 4u + q) * b4 + jt;
    var v = bp.alpha * c[q];
    if (it == jt) { v[q] += bp.diag; }
    if (bp.beta != 0.0) { v += bp.beta * bmmC4[o]; }
    bmmC4[o] = v;
  }
}

@group(0) @binding(1) var<storage, read> rotX4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rotR4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> rotY4: array<vec4<f32>>;

// Rows kk of the 4×4 tile of op(R_k) at rows jt·4.., columns ct·4.. (R at vec4 offset base).
fn tileR(base: u32, b4: u32, jt: u32, ct: u32, trans: u32) -> mat4x4<f32> {
  if (trans == 0u) {
    return mat4x4<f32>(rotR4[base + (jt * 4u) * b4 + ct], rotR4[base + (jt * 4u + 1u) * b4 + ct],
                       rotR4[base + (jt * 4u + 2u) * b4 + ct], rotR4[base + (jt * 4u + 3u) * b4 + ct]);
  }
  return transpose(mat4x4<f32>(rotR4[base + (ct * 4u) * b4 + jt], rotR4[base + (ct * 4u + 1u) * b4 + jt],
                               rotR4[base + (ct * 4u + 2u) * b4 + jt], rotR4[base + (ct * 4u + 3u) * b4 + jt]));
}

// Thread per (4 rows t, one block k, 4 output features c).
@compute @workgroup_size(64)
fn rotate_forward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  let F4 = rp.F / 4u;
  let b4 = rp.b / 4u;
  let rowTiles = (rp.T + 3u) / 4u;
  if (idx >= rowTiles * F4) { return; }
  let t0 = (idx / F4) * 4u;
  let cf = idx % F4;             // vec4 column of the output row
  let k = cf / b4;
  let ct = cf % b4;
  let rBase = select(k, 0u, rp.nR == 1u) * rp.b * b4;
  var y = mat4x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
  for (var jt = 0u; jt < b4; jt++) {
    let rm = tileR(rBase, b4, jt, ct, rp.trans);
    for (var q = 0u; q < 4u; q++) {
      if (t0 + q < rp.T) { y[q] += rm * rotX4[(t0 + q) * F4 + k * b4 + jt]; }
    }
  }
  for (var q = 0u; q < 4u; q++) {
    let t = t0 + q;
    if (t >= rp.T) { break; }
    var v = y[q];
    if (rp.acc == 1u) { v += rotY4[t * F4 + cf]; }
    rotY4[t * F4 + cf] = v;
  }
}

@group(0) @binding(1) var<storage, read> rgX4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rgDY4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> rgDR4: array<vec4<f32>>;

// Thread per 4×4 tile (rows j, columns c) of G_kR = Σ_t Σ_k x_kᵀ dy_k.
@compute @workgroup_size(64)
fn rotate_backward_r4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  let b4 = rp.b / 4u;
  let tiles = b4 * b4;
  if (idx >= rp.nR * tiles) { return; }
  let kR = idx / tiles;
  let jt = (idx % tiles) / b4;
  let ct = idx % b4;
  let F4 = rp.F / 4u;
  let r = rp.F / rp.b;
  var k0 = kR;
  var k1 = kR + 1u;
  if (rp.nR == 1u) { k0 = 0u; k1 = r; }
  var g = mat4x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
  for (var t = 0u; t < rp.T; t++) {
    for (var k = k0; k < k1; k++) {
      let xv = rgX4[t * F4 + k * b4 + jt];
      let dv = rgDY4[t * F4 + k * b4 + ct];
      g += mat4x4<f32>(xv.x * dv, xv.y * dv, xv.z * dv, xv.w * dv);
    }
  }
  let base = kR * rp.b * b4;
  if (rp.trans == 0u) {
    for (var q = 0u; q < 4u; q++) { rgDR4[base + (jt * 4u + q) * b4 + ct] += g[q]; }
  } else {
    let gt = transpose(g);
    for (var q = 0u; q < 4u; q++) { rgDR4[base + (ct * 4u + q) * b4 + jt] += gt[q]; }
  }
}
