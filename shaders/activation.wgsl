// Elementwise activations for adapters and prompt encoders, chosen by the
// override constant KIND (one specialised pipeline per activation):
//   0 relu      max(x, 0)                       d: x > 0
//   1 tanh      (1 - e^-2|x|) / (1 + e^-2|x|) · sign(x)      d: 1 - y²
//   2 sigmoid   1 / (1 + e^-x)                  d: s (1 - s)
//   3 silu      x s  (= swish)                  d: s (1 + x (1 - s))
//   4 gelu      x Φ(x) = x (1 + erf(x/√2)) / 2  d: Φ(x) + x φ(x)
//   5 gelu_new  x (1 + tanh(u)) / 2, u = √(2/π)(x + 0.044715 x³)
//               d: (1 + t)/2 + x (1 - t²) √(2/π)(1 + 3·0.044715 x²) / 2
//   6 leakyrelu x > 0 ? x : 0.01 x              d: x > 0 ? 1 : 0.01
// tanh and sigmoid are evaluated through e^-|x| so exp never overflows. erf
// uses Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), WGSL has no erf.
//
// 256 threads per workgroup, 2-D grid: i = gid.x + gid.y * nwg.x * 256.

override KIND: u32 = 0u;

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: Params;

fn sigm(x: f32) -> f32 {
  let z = exp(-abs(x));
  let s = 1.0 / (1.0 + z);
  return select(z * s, s, x >= 0.0);
}

fn tanh_safe(x: f32) -> f32 {
  let t = exp(-2.0 * abs(x));
  return sign(x) * (1.0 - t) / (1.0 + t);
}

fn erf_as(x: f32) -> f32 {
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
  return sign(x) * y;
}

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const INV_SQRT_2: f32 = 0.7071067811865476;
const INV_SQRT_2PI: f32 = 0.3989422804014327;

fn act(x: f32) -> f32 {
  switch KIND {
    case 0u: { return max(x, 0.0); }
    case 1u: { return tanh_safe(x); }
    case 2u: { return sigm(x); }
    case 3u: { return x * sigm(x); }
    case 4u: { return 0.5 * x * (1.0 + erf_as(x * INV_SQRT_2)); }
    case 5u: { return 0.5 * x * (1.0 + tanh_safe(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))); }
    default: { return select(0.01 * x, x, x > 0.0); }
  }
}

// d act / d x
fn dact(x: f32) -> f32 {
  switch KIND {
    case 0u: { return select(0.0, 1.0, x > 0.0); }
    case 1u: { let y = tanh_safe(x); return 1.0 - y * y; }
    case 2u: { let s = sigm(x); return s * (1.0 - s); }
    case 3u: { let s = sigm(x); return s * (1.0 + x * (1.0 - s)); }
    case 4u: { return 0.5 * (1.0 + erf_as(x * INV_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x); }
    case 5u: {
      let t = tanh_safe(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
      return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
    }
    default: { return select(0.01, 1.0, x > 0.0); }
  }
}

@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> f_y: array<f32>;

@compute @workgroup_size(256)
fn activation_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  f_y[i] = act(f_x[i]);
}

// dx += dout · act'(x)
@group(0) @binding(1) var<storage, read> b_dout: array<f32>;
@group(0) @binding(2) var<storage, read> b_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> b_dx: array<f32>;

@compute @workgroup_size(256)
fn activation_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  b_dx[i] += b_dout[i] * dact(b_x[i]);
}
