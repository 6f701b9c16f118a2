// gemv's load region for a packed B (f16 / bf16 base weights; DT: 0 = f16,
// 1 = bf16, pipeline constant): four values of a weight row are one
// vec2<u32> (element 2i in the low half of word i, see packed.wgsl), unpacked
// as matmul_packed_b.wgsl does. K % 4 == 0 and strideB % 4 == 0, so a chunk
// never straddles two rows. A is f32 vec4s as in matmul_gemv.wgsl.
@group(0) @binding(1) var<storage, read> A4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> Bp: array<vec2<u32>>;
override DT: u32 = 1u;

fn unpack2(w: u32) -> vec2<f32> {
  if (DT == 1u) { return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u)); }
  return unpack2x16float(w);
}

fn baseA(b: u32, m: u32) -> u32 { return (b * p.strideA + m * p.K) / 4u; }
fn baseB(b: u32, n: u32) -> u32 { return (b * p.strideB + n * p.K) / 4u; }
fn ldA(i: u32, kk: u32) -> vec4<f32> { return A4[i + kk]; }
fn ldB(i: u32, kk: u32) -> vec4<f32> {
  let w = Bp[i + kk];
  return vec4<f32>(unpack2(w.x), unpack2(w.y));
}
