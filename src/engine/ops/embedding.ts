/**
 * Token embedding: out[n, :] = table[ids[n], :]. Legend: N tokens, V vocab
 * rows, C channels; ids may have any shape (out is [...ids.shape, C]).
 *
 * Backward: dtable[v, :] += sum over n with ids[n] = v of dout[n, :], a
 * scatter-add. To keep it deterministic and free of float atomics the op also
 * takes the ids on the host, groups token positions by id there (CSR) and
 * uploads that once; the kernel then gives one thread to each (unique id,
 * channel) and sums that id's rows in order.
 */
import code from '../../../shaders/embedding.wgsl?raw';
import { ModelFormatError } from '../../errors';
import { params } from '../engine';
import type { Engine } from '../engine';
import { needsGrad } from '../tape';
import type { Tensor } from '../tensor';
import { grid1d } from './add';
import { packedConstant } from './packed';

/** Throw if any id is outside [0, V), naming the id, where it is, and the vocab size. */
export function checkTokenIds(ids: ArrayLike<number>, V: number, what = 'embedding'): void {
  for (let n = 0; n < ids.length; n++) {
    const id = ids[n];
    if (!(Number.isInteger(id) && id >= 0 && id < V)) {
      throw new ModelFormatError(
        `${what}: token id ${id} at position ${n} is out of range for vocab size ${V} (ids must be in [0, ${V - 1}]); ` +
          `the tokenizer and the model's embedding table disagree`,
      );
    }
  }
}

/**
 * Group token positions by id, packed as one Int32Array
 * [uniq (U ids, ascending) | offsets (U + 1) | positions (N, grouped by id, ascending within a group)].
 */
export function embeddingCsr(ids: ArrayLike<number>): { U: number; csr: Int32Array } {
  const N = ids.length;
  const order = new Int32Array(N);
  for (let n = 0; n < N; n++) order[n] = n;
  order.sort((a, b) => ids[a] - ids[b] || a - b);
  let U = 0;
  for (let k = 0; k < N; k++) if (k === 0 || ids[order[k]] !== ids[order[k - 1]]) U++;
  const csr = new Int32Array(2 * U + 1 + N);
  let u = -1;
  for (let k = 0; k < N; k++) {
    if (k === 0 || ids[order[k]] !== ids[order[k - 1]]) {
      u++;
      csr[u] = ids[order[k]];
      csr[U + u] = k;
    }
    csr[2 * U + 1 + k] = order[k];
  }
  csr[2 * U] = N;
  return { U, csr };
}

/**
 * out = table[ids]. `ids` is an int32 tensor, `hostIds` the same ids on the
 * host (validated here; grouped for the backward when the table is trained).
 */
export function embedding(e: Engine, ids: Tensor, table: Tensor, hostIds: Int32Array, name?: string): Tensor {
  if (table.shape.length !== 2) throw new Error(`embedding ${name ?? ''}: table must be [V, C], got [${table.shape}]`);
  const [V, C] = table.shape;
  if (hostIds.length !== ids.size) {
    throw new Error(`embedding ${name ?? ''}: ${hostIds.length} host ids for an ids tensor of ${ids.size}; pass the ids that were uploaded`);
  }
  checkTokenIds(hostIds, V, `embedding ${name ?? ''}`.trim());
  const N = ids.size;
  const out = e.empty([...ids.shape, C], name);
  if (table.blocks || table.packed) {
    // Frozen base tables stored packed or in row blocks: one gather per block.
    if (table.requiresGrad)
      throw new Error(`embedding ${name ?? ''}: ${table.name} is stored ${table.packed ? `packed (${table.dtype})` : 'in row blocks'} and cannot be trained`);
    for (const blk of table.blocks ?? [table]) {
      const packed = blk.packed;
      e.dispatch(
        code,
        packed ? 'embedding_forward_packed' : 'embedding_forward_block',
        params(N, C, blk.shape[0], blk.rowStart),
        [{ tensor: ids }, { tensor: blk, packed }, { tensor: out, write: true }],
        grid1d(e, N * C),
        packed ? { DT: packedConstant(blk.dtype) } : undefined,
      );
    }
    return out;
  }
  e.dispatch(code, 'embedding_forward', params(N, C, V, 0), [{ tensor: ids }, { tensor: table }, { tensor: out, write: true }], grid1d(e, N * C));
  if (e.tape && needsGrad(table)) {
    out.requiresGrad = true;
    const { U, csr } = embeddingCsr(hostIds);
    const csrT = e.upload(csr, [csr.length], 'embedding.csr');
    e.tape.record('embedding', () => {
      const dout = out.grad;
      if (!dout || !table.requiresGrad) return;
      e.dispatch(
        code,
        'embedding_backward',
        params(N, C, V, U),
        [{ tensor: dout }, { tensor: csrT }, { tensor: table.gradOrZeros(), write: true }],
        grid1d(e, U * C),
      );
      csrT.dispose();
    });
  }
  return out;
}

/** Float64 CPU reference: out[n, c] = table[ids[n], c]. */
export function embeddingCpu(ids: ArrayLike<number>, table: ArrayLike<number>, C: number): Float64Array {
  const V = table.length / C;
  checkTokenIds(ids, V, 'embeddingCpu');
  const out = new Float64Array(ids.length * C);
  for (let n = 0; n < ids.length; n++) for (let c = 0; c < C; c++) out[n * C + c] = table[ids[n] * C + c];
  return out;
}
