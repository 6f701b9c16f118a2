// v6's packed-B region (see matmul_packed_b.wgsl for loadB2). Chunks of 2S
// rows of op(B): lane l holds rows k0 + 2l (lo) and k0 + 2l + 1 (hi) of the
// 16 columns, 16 words: when TB = 1 one word per column gives both rows,
// when TB = 0 one word per row gives two columns. Then step j takes lane j's
// two rows by shuffle, against op(A)[m, k0 + 2j] and op(A)[m, k0 + 2j + 1]:
// the same shuffles per k as the f32 kernel, half the loads.
fn accumulate(acc: ptr<function, array<vec4<f32>, 4>>, b: u32, m: u32, n0: u32, lane: u32, S: u32) {
  for (var k0 = 0u; k0 < p.K; k0 += 2u * S) {
    let k = k0 + 2u * lane;
    var lo: array<vec4<f32>, 4>;
    var hi: array<vec4<f32>, 4>;
    for (var q = 0u; q < 4u; q++) {
      let n = n0 + q * 4u;
      if (TB == 1u) {
        let c0 = loadB2(b, k, n);
        let c1 = loadB2(b, k, n + 1u);
        let c2 = loadB2(b, k, n + 2u);
        let c3 = loadB2(b, k, n + 3u);
        lo[q] = vec4<f32>(c0.x, c1.x, c2.x, c3.x);
        hi[q] = vec4<f32>(c0.y, c1.y, c2.y, c3.y);
      } else {
        lo[q] = vec4<f32>(loadB2(b, k, n), loadB2(b, k, n + 2u));
        hi[q] = vec4<f32>(loadB2(b, k + 1u, n), loadB2(b, k + 1u, n + 2u));
      }
    }
    for (var j = 0u; j < S; j++) {
      let a0 = loadA(b, m, k0 + 2u * j);
      let a1 = loadA(b, m, k0 + 2u * j + 1u);
      (*acc)[0] += a0 * subgroupShuffle(lo[0], j) + a1 * subgroupShuffle(hi[0], j);
      (*acc)[1] += a0 * subgroupShuffle(lo[1], j) + a1 * subgroupShuffle(hi[1], j);
      (*acc)[2] += a0 * subgroupShuffle(lo[2], j) + a1 * subgroupShuffle(hi[2], j);
      (*acc)[3] += a0 * subgroupShuffle(lo[3], j) + a1 * subgroupShuffle(hi[3], j);
    }
  }
}
