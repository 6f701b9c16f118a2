// Rotary position embedding, HF LLaMA "rotate_half" convention.
// Legend: R = B*T token rows, H heads, D head dim, half = D/2.
// x is [R, H, D]; pos[r] is the absolute position of row r; invf[i] the
// inverse frequency of pair (i, i + half).
//
//   angle = f32(pos) * invf[i]            (an f32 product, as HF computes freqs)
//   forward:  y[i]      = x[i] cos - x[i+half] sin
//             y[i+half] = x[i+half] cos + x[i] sin
//   backward (rotation by -angle, the transpose):
//             dx[i]      += dy[i] cos + dy[i+half] sin
//             dx[i+half] += dy[i+half] cos - dy[i] sin
//
// One thread per (row, head, pair), 2-D launch grid of 256-wide workgroups.
//
// cos/sin are computed here rather than with the builtins: WGSL only promises
// 2^-11 absolute error for cos/sin on [-pi, pi] (SwiftShader delivers about
// that) and nothing outside it, while angles reach pos ~ 1e5 rad. So:
// Cody-Waite reduction r = angle - k pi/2 (k = nearest integer), then the
// Cephes sinf/cosf minimax polynomials on |r| <= pi/4 (~1 ulp), then the
// quadrant k mod 4 picks the signs. The same accuracy on every GPU.

struct Params { n: u32, H: u32, D: u32, half: u32 }

@group(0) @binding(0) var<uniform> p: Params;

// pi/2 = C1 + C2 + C3 + C4: C1..C3 have 7 significant bits, so k * Ci is exact
// for |k| < 2^17 (angles up to ~2e5 rad), and the subtractions lose nothing.
const TWO_OVER_PI: f32 = 0.6366197466850281;
const C1: f32 = 1.578125;
const C2: f32 = -0.00732421875;
const C3: f32 = -4.470348358154297e-06;
const C4: f32 = 1.5893254712295857e-08;

// (cos(angle), sin(angle))
fn cos_sin(angle: f32) -> vec2<f32> {
  let k = round(angle * TWO_OVER_PI);
  let r = (((angle - k * C1) - k * C2) - k * C3) - k * C4;
  let z = r * r;
  let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
  let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
  // angle = r + q pi/2: rotate (c, s) by q quarter turns.
  switch (bitcast<u32>(i32(k)) & 3u) {
    case 0u: { return vec2<f32>(c, s); }
    case 1u: { return vec2<f32>(-s, c); }
    case 2u: { return vec2<f32>(-c, -s); }
    default: { return vec2<f32>(s, -c); }
  }
}

// Index of element i of pair t's first half, and the pair's cos/sin.
struct Pair { i0: u32, cs: vec2<f32> }

fn pair(t: u32) -> Pair {
  let i = t % p.half;
  let rh = t / p.half;          // row * H + head
  let row = rh / p.H;
  var out: Pair;
  out.i0 = rh * p.D + i;
  out.cs = cos_sin(f32(pos[row]) * invf[i]);
  return out;
}

@group(0) @binding(1) var<storage, read> src: array<f32>;   // x (forward) or dy (backward)
@group(0) @binding(2) var<storage, read> pos: array<i32>;
@group(0) @binding(3) var<storage, read> invf: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;  // y (forward) or dx (backward)

@compute @workgroup_size(256)
fn rope_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.n) { return; }
  let q = pair(t);
  let a = src[q.i0];
  let b = src[q.i0 + p.half];
  dst[q.i0] = a * q.cs.x - b * q.cs.y;
  dst[q.i0 + p.half] = b * q.cs.x + a * q.cs.y;
}

@compute @workgroup_size(256)
fn rope_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.n) { return; }
  let q = pair(t);
  let da = src[q.i0];
  let db = src[q.i0 + p.half];
  dst[q.i0] += da * q.cs.x + db * q.cs.y;
  dst[q.i0 + p.half] += db * q.cs.x - da * q.cs.y;
}
