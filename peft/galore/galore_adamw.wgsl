// GaLore's AdamW (galore_torch.AdamW, METHODS.md §11), one thread per element.
// Its moments differ from torch AdamW (adamw.wgsl) in where eps goes: eps is
// added to sqrt(v) before the bias correction, which is folded into the step:
//   g  = x * gradScale * clip[0]              (x: the projected gradient Ĝ, or G)
//   m  = m + (1 - b1)(g - m)                  (= b1 m + (1 - b1) g)
//   v  = b2 v + (1 - b2) g^2
//   N  = m / (sqrt(v) + eps)
// galore_moments writes N over x in place (the caller projects N back and
// applies step = lr sqrt(1 - b2^t) / (1 - b1^t), scale and decay in one
// matmul). galore_adamw is the unprojected step of the other parameters:
//   p  = (p - stepSize * N) * decay,   decay = 1 - lr wd  (decay AFTER the update)
// The host computes stepSize, 1 - b1, 1 - b2 and decay in float64 and rounds
// once to f32. Elements over a 2-D grid: i = (wg.y * nx + wg.x) * 256 + lid.

struct Params {
  n: u32, nx: u32, _p0: u32, _p1: u32,
  oneMinusBeta1: f32, beta2: f32, oneMinusBeta2: f32, eps: f32,
  stepSize: f32, decay: f32, gradScale: f32, _p2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ---- galore_moments: x (in: Ĝ, out: N) -------------------------------------------
@group(0) @binding(1) var<storage, read> mClip: array<f32>;
@group(0) @binding(2) var<storage, read_write> mX: array<f32>;
@group(0) @binding(3) var<storage, read_write> mM: array<f32>;
@group(0) @binding(4) var<storage, read_write> mV: array<f32>;

@compute @workgroup_size(256)
fn galore_moments(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * p.nx + wg.x) * 256u + lid;
  if (i >= p.n) { return; }
  let g = mX[i] * p.gradScale * mClip[0];
  let m = mM[i] + p.oneMinusBeta1 * (g - mM[i]);
  let v = p.beta2 * mV[i] + p.oneMinusBeta2 * g * g;
  mM[i] = m;
  mV[i] = v;
  mX[i] = m / (sqrt(v) + p.eps);
}

// ---- galore_adamw: full-rank step on param -------------------------------------
@group(0) @binding(1) var<storage, read> aGrad: array<f32>;
@group(0) @binding(2) var<storage, read> aClip: array<f32>;
@group(0) @binding(3) var<storage, read_write> aParam: array<f32>;
@group(0) @binding(4) var<storage, read_write> aM: array<f32>;
@group(0) @binding(5) var<storage, read_write> aV: array<f32>;

@compute @workgroup_size(256)
fn galore_adamw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * p.nx + wg.x) * 256u + lid;
  if (i >= p.n) { return; }
  let g = aGrad[i] * p.gradScale * aClip[0];
  let m = aM[i] + p.oneMinusBeta1 * (g - aM[i]);
  let v = p.beta2 * aV[i] + p.oneMinusBeta2 * g * g;
  aM[i] = m;
  aV[i] = v;
  aParam[i] = (aParam[i] - p.stepSize * (m / (sqrt(v) + p.eps))) * p.decay;
}
