// Packed 16-bit base weights and row blocks of split tensors.
//
// A packed tensor holds two 16-bit floats per u32 word, element 2i in the low
// half (safetensors' little-endian order). F16 is unpacked with
// unpack2x16float (core WGSL: no shader-f16 needed); BF16 is the top half of
// an f32, so a 16-bit shift gives the f32 bits exactly.
// DT: 0 = f16, 1 = bf16 (pipeline constant).

override DT: u32 = 1u;

fn unpack2(w: u32) -> vec2<f32> {
  if (DT == 1u) { return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u)); }
  return unpack2x16float(w);
}

struct UnpackParams { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> up: UnpackParams;
@group(0) @binding(1) var<storage, read> src_p: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst_f: array<f32>;

// dst[2w], dst[2w+1] = the two values of word w (the last one only when n is even).
@compute @workgroup_size(64)
fn unpack(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = gid.x + gid.y * nwg.x * 64u;
  let i = 2u * w;
  if (i >= up.n) { return; }
  let v = unpack2(src_p[w]);
  dst_f[i] = v.x;
  if (i + 1u < up.n) { dst_f[i + 1u] = v.y; }
}

// Column block copy between row-major matrices: for m < M, j < W,
//   dst[m * ldd + dOff + j] (+)= src[m * lds + sOff + j]
// (the logits of one row block of a split head go to their columns; the
// matching columns of dlogits come out for its backward).
struct ColsParams { M: u32, W: u32, lds: u32, sOff: u32, ldd: u32, dOff: u32, accumulate: u32, _p: u32 }
@group(0) @binding(0) var<uniform> cp: ColsParams;
@group(0) @binding(1) var<storage, read> src_c: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst_c: array<f32>;

@compute @workgroup_size(64)
fn copy_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 64u;
  if (t >= cp.M * cp.W) { return; }
  let m = t / cp.W;
  let j = t % cp.W;
  let di = m * cp.ldd + cp.dOff + j;
  var v = src_c[m * cp.lds + cp.sOff + j];
  if (cp.accumulate == 1u) { v += dst_c[di]; }
  dst_c[di] = v;
}
