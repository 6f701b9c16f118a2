// Row-wise argmax: out[at + n] = argmax_j x[n, j], the first maximum on ties
// (torch.argmax). Legend: N rows, V columns. x [N, V] f32, out i32.
// No backward: the index of a maximum has no gradient.
//
// One workgroup of WG threads per row (an override: 256 for large V, 64 for
// small), rows over a 2-D grid (row = wg.y * nx + wg.x) so N may exceed 65535.
// Each thread scans j = tid, tid + WG, ... keeping the first of its maxima;
// the reduction keeps the larger value and, on a tie, the smaller index, so
// the result is the first maximum whatever the thread count. Two-level
// reduction (16 lanes, then one) as in cross_entropy.wgsl: two barriers.
// A row holding NaN has no defined answer (WGSL may assume there is none).

struct Params { N: u32, V: u32, nx: u32, at: u32 }

override WG: u32 = 256u;
const LANES: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<i32>;

var<workgroup> redV: array<f32, WG>;
var<workgroup> redI: array<u32, WG>;

// Whether (v, i) comes before (bv, bi): larger value, or equal value and
// smaller index; index V (a thread that saw no column) comes last.
fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
  return i != p.V && (bi == p.V || v > bv || (v == bv && i < bi));
}

@compute @workgroup_size(WG)
fn argmax_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n = wg.y * p.nx + wg.x;
  if (n >= p.N) { return; }
  let base = n * p.V;
  // A thread takes its first column, then strictly larger values only; one
  // with no column (tid >= V) keeps index V.
  var bv = 0.0;
  var bi = p.V;
  for (var j = tid; j < p.V; j += WG) {
    let v = x[base + j];
    if (bi == p.V || v > bv) {
      bv = v;
      bi = j;
    }
  }
  redV[tid] = bv;
  redI[tid] = bi;
  workgroupBarrier();
  if (tid < LANES) {
    for (var k = tid + LANES; k < WG; k += LANES) {
      if (better(redV[k], redI[k], bv, bi)) {
        bv = redV[k];
        bi = redI[k];
      }
    }
    redV[tid] = bv;
    redI[tid] = bi;
  }
  workgroupBarrier();
  if (tid == 0u) {
    for (var k = 1u; k < LANES; k++) {
      if (better(redV[k], redI[k], bv, bi)) {
        bv = redV[k];
        bi = redI[k];
      }
    }
    out[p.at + n] = i32(bi);
  }
}
