/**
 * A small ONNX graph builder: ops append nodes and return their output
 * names, constants and weights become initializers. Names are unique by
 * construction (a prefix plus a counter), so a graph can be written in the
 * order a reader follows the math.
 */
import { DataType, encodeModel, type AttributeValue, type DataTypeId, type NodeValue, type TensorValue, type ValueInfo } from './proto';

export type Attrs = Record<string, number | readonly number[] | string | { float: number } | { floats: readonly number[] }>;

function attribute(v: Attrs[string]): AttributeValue {
  if (typeof v === 'number') return { kind: 'int', value: v };
  if (typeof v === 'string') return { kind: 'string', value: v };
  if (Array.isArray(v)) return { kind: 'ints', value: v as readonly number[] };
  if ('float' in (v as object)) return { kind: 'float', value: (v as { float: number }).float };
  return { kind: 'floats', value: (v as { floats: readonly number[] }).floats };
}

const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

export class GraphBuilder {
  readonly nodes: NodeValue[] = [];
  readonly initializers: TensorValue[] = [];
  readonly inputs: ValueInfo[] = [];
  readonly outputs: ValueInfo[] = [];
  private count = 0;
  private constants = new Map<string, string>();
  /** Bytes of initializer data so far (the 2 GiB protobuf limit applies to the whole file). */
  weightBytes = 0;

  /** Append one node; returns its single output name. */
  op(opType: string, inputs: readonly string[], attrs: Attrs = {}, name?: string): string {
    return this.opN(opType, inputs, 1, attrs, name)[0];
  }

  /** Append one node with `outputs` outputs. */
  opN(opType: string, inputs: readonly string[], outputs: number, attrs: Attrs = {}, name?: string): string[] {
    const id = `${name ?? opType}_${this.count++}`;
    const outs = Array.from({ length: outputs }, (_, i) => (outputs === 1 ? id : `${id}:${i}`));
    this.nodes.push({
      opType,
      name: id,
      inputs,
      outputs: outs,
      attributes: Object.fromEntries(Object.entries(attrs).map(([k, v]) => [k, attribute(v)])),
    });
    return outs;
  }

  /** A node whose output has a fixed name (graph outputs such as logits, present.N.key). */
  opTo(output: string, opType: string, inputs: readonly string[], attrs: Attrs = {}): string {
    this.nodes.push({
      opType,
      name: `${opType}_${this.count++}`,
      inputs,
      outputs: [output],
      attributes: Object.fromEntries(Object.entries(attrs).map(([k, v]) => [k, attribute(v)])),
    });
    return output;
  }

  initializer(name: string, dataType: DataTypeId, dims: readonly number[], data: ArrayBufferView): string {
    const raw = bytesOf(data);
    this.initializers.push({ name, dataType, dims, raw });
    this.weightBytes += raw.byteLength;
    return name;
  }

  /** An int64 constant (dims [] for a scalar), shared between uses. */
  int64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const key = `i64:${dims.join('x')}:${values.join(',')}`;
    let name = this.constants.get(key);
    if (!name) {
      name = this.initializer(`const_i64_${this.constants.size}`, DataType.INT64, dims, BigInt64Array.from(values.map((v) => BigInt(v))));
      this.constants.set(key, name);
    }
    return name;
  }

  /** A float32 constant (dims [] for a scalar), shared between uses. */
  float32(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const key = `f32:${dims.join('x')}:${values.join(',')}`;
    let name = this.constants.get(key);
    if (!name) {
      name = this.initializer(`const_f32_${this.constants.size}`, DataType.FLOAT, dims, Float32Array.from(values));
      this.constants.set(key, name);
    }
    return name;
  }

  input(name: string, dataType: DataTypeId, shape: ValueInfo['shape']): string {
    this.inputs.push({ name, dataType, shape });
    return name;
  }

  output(name: string, dataType: DataTypeId, shape: ValueInfo['shape']): void {
    this.outputs.push({ name, dataType, shape });
  }

  /**
   * Move initializers of at least `minBytes` into external data files named
   * `<location>`, `<location>_1`, ... (transformers.js's chunk names), each
   * under `chunkBytes`; returns the files' bytes. encode() then writes only
   * their names and ranges.
   */
  externalize(location: string, minBytes: number, chunkBytes: number): Uint8Array[] {
    const chunks: Uint8Array[][] = [];
    let size = chunkBytes;
    for (const t of this.initializers) {
      if (t.raw.byteLength < minBytes) continue;
      if (size + t.raw.byteLength > chunkBytes) {
        chunks.push([]);
        size = 0;
      }
      const name = chunks.length === 1 ? location : `${location}_${chunks.length - 1}`;
      t.external = { location: name, offset: size, length: t.raw.byteLength };
      chunks[chunks.length - 1].push(t.raw);
      size += t.raw.byteLength;
    }
    return chunks.map((parts) => {
      const out = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
      let o = 0;
      for (const p of parts) {
        out.set(p, o);
        o += p.byteLength;
      }
      return out;
    });
  }

  encode(opts: { opset: number; irVersion: number; name: string; producerVersion: string }): Uint8Array {
    return encodeModel({
      irVersion: opts.irVersion,
      opsetVersion: opts.opset,
      producerName: 'peft-studio',
      producerVersion: opts.producerVersion,
      graphName: opts.name,
      nodes: this.nodes,
      initializers: this.initializers,
      inputs: this.inputs,
      outputs: this.outputs,
    });
  }
}
