// A packed B operand for the matmul kernels (f16 / bf16 base weights, two
// 16-bit values per u32 word, element 2i in the low half; see packed.wgsl).
// matmul.ts puts this, then the kernel's own matmul_vN_packed_b.wgsl, in
// place of the kernel's "packed-B region" (its f32 B binding and loads).
// DT: 0 = f16, 1 = bf16 (pipeline constant).
//
// A word holds two neighbours along B's stored rows: op(B)[k, n] and
// op(B)[k + 1, n] when TB = 1 (B stored [N, K]), op(B)[k, n] and
// op(B)[k, n + 1] when TB = 0 (B stored [K, N]). The host runs these kernels
// only when that dimension (K or N) and strideB are even, so a pair whose
// first index is even never straddles two words or the matrix's edge.

@group(0) @binding(2) var<storage, read> Bp: array<u32>;
override DT: u32 = 1u;

fn unpack2(w: u32) -> vec2<f32> {
  if (DT == 1u) { return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u)); }
  return unpack2x16float(w);
}

// The pair starting at op(B)[k, n] (k even when TB = 1, n even when TB = 0), zero outside the matrix.
fn loadB2(b: u32, k: u32, n: u32) -> vec2<f32> {
  if (n >= p.N || k >= p.K) { return vec2<f32>(0.0); }
  if (TB == 1u) { return unpack2(Bp[(b * p.strideB + n * p.K + k) / 2u]); }
  return unpack2(Bp[(b * p.strideB + k * p.N + n) / 2u]);
}
