// v5's packed-B region (see matmul_packed_b.wgsl for loadB2): Bs <-
// op(B)[k0 .. k0+15, n0 .. n0+63] from 512 words, 8 per thread instead of
// 16 f32 loads, consecutive threads along B's stored rows.
fn stageB(b: u32, k0: u32, n0: u32, tid: u32) {
  for (var r = 0u; r < 8u; r++) {
    let idx = tid + r * 64u;
    if (TB == 1u) {
      // B's row n, k .. k+1: one column of the tile, two of its k steps.
      let nn = idx / 8u;
      let kb = (idx % 8u) * 2u;
      let v = loadB2(b, k0 + kb, n0 + nn);
      Bs[kb * 16u + nn / 4u][nn % 4u] = v.x;
      Bs[(kb + 1u) * 16u + nn / 4u][nn % 4u] = v.y;
    } else {
      // B's row k, n .. n+1: two neighbouring columns, the same vec4 of Bs.
      let kb = idx / 32u;
      let nn = (idx % 32u) * 2u;
      let v = loadB2(b, k0 + kb, n0 + nn);
      let i = kb * 16u + nn / 4u;
      Bs[i][nn % 4u] = v.x;
      Bs[i][nn % 4u + 1u] = v.y;
    }
  }
}
