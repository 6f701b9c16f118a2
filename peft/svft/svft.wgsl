// SVFT spectral step (METHODS.md §10.1): for z = x Vᵀ (rows of n coordinates),
//   out[t, i] = s[i] · z[t, i] + σ(g) · Σ_{q: row_q = i} δ_q · z[t, col_q]
// i.e. out = z (diag(s) + σ(g) M)ᵀ with M the sparse n×n matrix holding δ at
// (row_idx, col_idx). The pattern buffer packs, as i32:
//   rowPtr [n+1] | col [k] | colPtr [n+1] | perm [k] | row [k]
// (positions sorted row-major; perm lists them column by column, for the
// backward of z). Legend: T rows, n spectral size, k pattern positions.
//
// Backward with upstream dy (= ∂L/∂out):
//   dz[t, j] += s[j] dy[t, j] + σ Σ_{q: col_q = j} δ_q dy[t, row_q]
//   P_q = Σ_t dy[t, row_q] z[t, col_q];  dδ_q += σ P_q;  dg += σ(1 − σ) Σ_q δ_q P_q
// One thread per output element; the gate sum is one workgroup.

struct Params { T: u32, n: u32, k: u32, _p: u32 }
@group(0) @binding(0) var<uniform> p: Params;

fn sigmoid(g: f32) -> f32 { return 1.0 / (1.0 + exp(-g)); }

fn rowPtr(i: u32) -> u32 { return u32(pat[i]); }
fn colAt(q: u32) -> u32 { return u32(pat[p.n + 1u + q]); }
fn colPtr(j: u32) -> u32 { return u32(pat[p.n + 1u + p.k + j]); }
fn permAt(q: u32) -> u32 { return u32(pat[2u * p.n + 2u + p.k + q]); }
fn rowAt(q: u32) -> u32 { return u32(pat[2u * p.n + 2u + 2u * p.k + q]); }

@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> s: array<f32>;
@group(0) @binding(3) var<storage, read> delta: array<f32>;
@group(0) @binding(4) var<storage, read> gate: array<f32>;
@group(0) @binding(5) var<storage, read> pat: array<i32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn svft_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  if (idx >= p.T * p.n) { return; }
  let i = idx % p.n;
  let row = idx - i;
  var m = 0.0;
  for (var q = rowPtr(i); q < rowPtr(i + 1u); q++) { m += delta[q] * z[row + colAt(q)]; }
  out[idx] = s[i] * z[idx] + sigmoid(gate[0]) * m;
}

// Bindings: dy, s, delta, gate, pat, dz (read_write).
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dz: array<f32>;

@compute @workgroup_size(64)
fn svft_backward_z(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  if (idx >= p.T * p.n) { return; }
  let j = idx % p.n;
  let row = idx - j;
  var m = 0.0;
  for (var c = colPtr(j); c < colPtr(j + 1u); c++) {
    let q = permAt(c);
    m += delta[q] * dy[row + rowAt(q)];
  }
  dz[idx] += s[j] * dy[idx] + sigmoid(gate[0]) * m;
}

// Bindings: dy, z (as binding 2), gate, pat, prod (read_write), ddelta (read_write).
@group(0) @binding(2) var<storage, read> zb: array<f32>;
@group(0) @binding(3) var<storage, read> gateB: array<f32>;
@group(0) @binding(4) var<storage, read> patB: array<i32>;
@group(0) @binding(5) var<storage, read_write> prod: array<f32>;
@group(0) @binding(6) var<storage, read_write> ddelta: array<f32>;

@compute @workgroup_size(64)
fn svft_backward_delta(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let q = gid.x + gid.y * nwg.x * 64u;
  if (q >= p.k) { return; }
  let r = u32(patB[2u * p.n + 2u + 2u * p.k + q]);
  let c = u32(patB[p.n + 1u + q]);
  var acc = 0.0;
  for (var t = 0u; t < p.T; t++) { acc += dy[t * p.n + r] * zb[t * p.n + c]; }
  prod[q] = acc;
  ddelta[q] += sigmoid(gateB[0]) * acc;
}

// One workgroup: dg += σ'(g) Σ_q δ_q P_q. Bindings: delta, gate, prod (read), dgate (read_write).
@group(0) @binding(1) var<storage, read> deltaG: array<f32>;
@group(0) @binding(2) var<storage, read> gateG: array<f32>;
@group(0) @binding(3) var<storage, read> prodG: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgate: array<f32>;
var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn svft_backward_gate(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var q = lid; q < p.k; q += 64u) { acc += deltaG[q] * prodG[q]; }
  partial[lid] = acc;
  workgroupBarrier();
  if (lid == 0u) {
    var total = 0.0;
    for (var i = 0u; i < 64u; i++) { total += partial[i]; }
    let sg = sigmoid(gateG[0]);
    dgate[0] += sg * (1.0 - sg) * total;
  }
}

// Merge: A = (diag(s) + σ(g) M) V for V [n, C] (C = in), row-wise:
//   A[i, c] = s[i] V[i, c] + σ Σ_{q: row_q = i} δ_q V[col_q, c]
// Bindings: V (as binding 1), s, delta, gate, pat, A (read_write); p.T holds C.
@compute @workgroup_size(64)
fn svft_merge_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  let C = p.T;
  if (idx >= p.n * C) { return; }
  let i = idx / C;
  let c = idx % C;
  var m = 0.0;
  for (var q = rowPtr(i); q < rowPtr(i + 1u); q++) { m += delta[q] * z[colAt(q) * C + c]; }
  out[idx] = s[i] * z[idx] + sigmoid(gate[0]) * m;
}
