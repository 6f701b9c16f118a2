// Inverted dropout: y = x · keep / (1 − p), keep = [u ≥ p] with u a uniform
// from a counter-based hash of (seed, element index), so the backward
// recomputes the same mask instead of storing it.
struct Params { n: u32, seed: u32, p: f32, nx: u32 }

@group(0) @binding(0) var<uniform> pr: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// PCG hash (Jarzynski & Olano 2020).
fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

fn keepScale(i: u32) -> f32 {
  let u = f32(pcg(i ^ pcg(pr.seed)) >> 8u) / 16777216.0;
  return select(0.0, 1.0 / (1.0 - pr.p), u >= pr.p);
}

@compute @workgroup_size(256)
fn dropout_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * pr.nx * 256u + gid.x;
  if (i >= pr.n) { return; }
  dst[i] = src[i] * keepScale(i);
}

// dx += dy · keep / (1 − p)
@compute @workgroup_size(256)
fn dropout_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * pr.nx * 256u + gid.x;
  if (i >= pr.n) { return; }
  dst[i] += src[i] * keepScale(i);
}
