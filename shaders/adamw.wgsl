// AdamW step (torch.optim.AdamW, non-amsgrad, non-fused), one thread per element:
//   g  = grad * gradScale * (scaleT[0] if hasScaleT)
//   p *= 1 - lr * wd
//   m  = lerp(m, g, 1 - b1) = m + (1 - b1)(g - m)
//   v  = b2 v + (1 - b2) g^2
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),  bc1 = 1 - b1^t, bc2 = 1 - b2^t
// which is p -= lr * mhat / (sqrt(vhat) + eps). The host passes stepSize = lr / bc1,
// sqrtBc2 = sqrt(bc2), 1 - b1, 1 - b2 and 1 - lr wd computed in float64 and
// rounded once to f32, as torch does (1 - f32(0.999) would be off by 1.3e-5).
// Elements are spread over a 2-D grid: i = (wg.y * nx + wg.x) * 256 + lid.

struct Params {
  n: u32, nx: u32, hasScaleT: u32, _p0: u32,
  decay: f32, oneMinusBeta1: f32, beta2: f32, oneMinusBeta2: f32,
  eps: f32, stepSize: f32, sqrtBc2: f32, gradScale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> scaleT: array<f32>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read_write> mBuf: array<f32>;
@group(0) @binding(5) var<storage, read_write> vBuf: array<f32>;

@compute @workgroup_size(256)
fn adamw_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * p.nx + wg.x) * 256u + lid;
  if (i >= p.n) { return; }
  var g = grad[i] * p.gradScale;
  if (p.hasScaleT == 1u) { g *= scaleT[0]; }
  let m = mBuf[i] + p.oneMinusBeta1 * (g - mBuf[i]);
  let v = p.beta2 * vBuf[i] + p.oneMinusBeta2 * g * g;
  mBuf[i] = m;
  vBuf[i] = v;
  let w = param[i] * p.decay;
  param[i] = w - p.stepSize * m / (sqrt(v) / p.sqrtBc2 + p.eps);
}

// ---- sum of squares, deterministic two-pass reduction ---------------------------
// pass 1: workgroup w sums x_i^2 over i = w*256 + lid + k*G*256 into partial[w];
// pass 2: one workgroup sums the G partials (out[0] += when accumulate).
// Two-level in-workgroup reductions (16 lanes, then one): two barriers.
struct SumParams { n: u32, G: u32, accumulate: u32, _p0: u32 }
@group(0) @binding(0) var<uniform> sp: SumParams;
@group(0) @binding(1) var<storage, read> xIn: array<f32>;
@group(0) @binding(2) var<storage, read_write> sumOut: array<f32>;

const LANES: u32 = 16u;
var<workgroup> red: array<f32, 256>;

fn reduce256(s: f32, lid: u32) -> f32 {
  red[lid] = s;
  workgroupBarrier();
  if (lid < LANES) {
    var a = red[lid];
    for (var k = lid + LANES; k < 256u; k += LANES) { a += red[k]; }
    red[lid] = a;
  }
  workgroupBarrier();
  var t = 0.0;
  if (lid == 0u) {
    for (var k = 0u; k < LANES; k++) { t += red[k]; }
  }
  return t;
}

@compute @workgroup_size(256)
fn sum_squares_partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = wg.x * 256u + lid; i < sp.n; i += sp.G * 256u) {
    let x = xIn[i];
    s += x * x;
  }
  let t = reduce256(s, lid);
  if (lid == 0u) { sumOut[wg.x] = t; }
}

@compute @workgroup_size(256)
fn sum_squares_final(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < sp.G; i += 256u) { s += xIn[i]; }
  let t = reduce256(s, lid);
  if (lid == 0u) {
    if (sp.accumulate == 1u) { sumOut[0] = sumOut[0] + t; } else { sumOut[0] = t; }
  }
}

// ---- clip coefficient (torch.nn.utils.clip_grad_norm_) --------------------------
//   coef = min(1, maxNorm / (sqrt(sumSq) + 1e-6))
struct ClipParams { maxNorm: f32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> cp: ClipParams;

@compute @workgroup_size(1)
fn clip_coefficient() {
  sumOut[0] = min(1.0, cp.maxNorm / (sqrt(xIn[0]) + 1e-6));
}
