// Token embedding lookup. Legend: N tokens, V vocab rows, C channels.
//   forward:  out[n, c] = table[ids[n], c]
//   backward: dtable[v, c] += sum over n with ids[n] == v of dout[n, c]
//
// The backward is a scatter-add done deterministically without float atomics:
// the host groups token positions by id (CSR: the U unique ids ascending,
// offsets[U+1], and positions[N] grouped by id, ascending within a group),
// and one thread per (unique id, channel) sums that id's rows in a fixed
// order. Threads run along c, so reads of dout and writes of dtable coalesce.
// The three CSR arrays are packed in one i32 buffer: [uniq | offsets | positions].
//
// 256 threads per workgroup, 2-D grid: t = gid.x + gid.y * nwg.x * 256.

struct Params { n: u32, C: u32, V: u32, U: u32 }

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> f_ids: array<i32>;
@group(0) @binding(2) var<storage, read> f_table: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_out: array<f32>;

@compute @workgroup_size(256)
fn embedding_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.n * p.C) { return; }
  let n = t / p.C;
  let c = t % p.C;
  let id = f_ids[n];
  // The host rejects out-of-range ids; this guard only keeps a bad buffer from reading out of bounds.
  if (id < 0 || u32(id) >= p.V) { f_out[t] = 0.0; return; }
  f_out[t] = f_table[u32(id) * p.C + c];
}

@group(0) @binding(1) var<storage, read> b_dout: array<f32>;
@group(0) @binding(2) var<storage, read> b_csr: array<i32>;
@group(0) @binding(3) var<storage, read_write> b_dtable: array<f32>;

@compute @workgroup_size(256)
fn embedding_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.U * p.C) { return; }
  let u = t / p.C;
  let c = t % p.C;
  let offsets = p.U;
  let positions = 2u * p.U + 1u;
  let k0 = u32(b_csr[offsets + u]);
  let k1 = u32(b_csr[offsets + u + 1u]);
  var s = 0.0;
  for (var k = k0; k < k1; k++) {
    s += b_dout[u32(b_csr[positions + k]) * p.C + c];
  }
  b_dtable[u32(b_csr[u]) * p.C + c] += s;
}

// Forward over one row block of the table (a table split because it exceeds a
// storage binding, or stored packed): rows r0 .. r0 + rows - 1. Positions
// whose id lies in another block are left alone (that block's dispatch writes
// them). The block is f32 (embedding_forward_block) or packed 16-bit floats,
// two per u32 with element 2i in the low half (embedding_forward_packed;
// DT 0 = f16 via unpack2x16float, 1 = bf16 via a 16-bit shift).
struct BlockParams { n: u32, C: u32, rows: u32, r0: u32 }
@group(0) @binding(0) var<uniform> bp: BlockParams;
@group(0) @binding(2) var<storage, read> k_table: array<f32>;
@group(0) @binding(2) var<storage, read> k_packed: array<u32>;

override DT: u32 = 1u;

fn blockRow(n: u32) -> i32 {
  return f_ids[n] - i32(bp.r0);
}

@compute @workgroup_size(256)
fn embedding_forward_block(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= bp.n * bp.C) { return; }
  let r = blockRow(t / bp.C);
  if (r < 0 || u32(r) >= bp.rows) { return; }
  f_out[t] = k_table[u32(r) * bp.C + t % bp.C];
}

@compute @workgroup_size(256)
fn embedding_forward_packed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= bp.n * bp.C) { return; }
  let r = blockRow(t / bp.C);
  if (r < 0 || u32(r) >= bp.rows) { return; }
  let i = u32(r) * bp.C + t % bp.C;
  let w = k_packed[i / 2u];
  let half = select(w & 0xffffu, w >> 16u, (i & 1u) == 1u);
  if (DT == 1u) {
    f_out[t] = bitcast<f32>(half << 16u);
  } else {
    f_out[t] = unpack2x16float(half).x;
  }
}
