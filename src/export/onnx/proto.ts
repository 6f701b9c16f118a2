/**
 * The slice of ONNX's protobuf schema (onnx/onnx.proto, IR version 8) that a
 * decoder graph needs, written by hand: a protobuf message is a list of
 * (field number << 3 | wire type) keys, each followed by a varint (wire type
 * 0), a length-prefixed byte string or sub-message (2), or 4 little-endian
 * bytes (5). Only writing is needed, so this is a few dozen lines instead of a
 * protobuf runtime and a generated schema.
 *
 * Field numbers (onnx.proto):
 *   ModelProto        ir_version 1, producer_name 2, producer_version 3, graph 7, opset_import 8
 *   OperatorSetIdProto domain 1, version 2
 *   GraphProto        node 1, name 2, initializer 5, input 11, output 12
 *   NodeProto         input 1, output 2, name 3, op_type 4, attribute 5
 *   AttributeProto    name 1, f 2, i 3, s 4, t 5, floats 7, ints 8, type 20
 *   TensorProto       dims 1, data_type 2, name 8, raw_data 9, external_data 13 (key 1, value 2), data_location 14
 *   ValueInfoProto    name 1, type 2
 *   TypeProto         tensor_type 1 → elem_type 1, shape 2 → dim 1 → dim_value 1 | dim_param 2
 */

/** TensorProto.DataType values used here. */
export const DataType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, BOOL: 9, FLOAT16: 10 } as const;
export type DataTypeId = (typeof DataType)[keyof typeof DataType];

/** AttributeProto.AttributeType values used here. */
const AttrType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

/** Growable byte buffer with the three wire encodings. */
class Writer {
  private buf = new Uint8Array(256);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }

  /** Unsigned varint of a non-negative integer up to 2^53, or a negative int64 (10 bytes, two's complement). */
  varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    this.reserve(10);
    while (x >= 0x80n) {
      this.buf[this.length++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.buf[this.length++] = Number(x);
  }

  key(field: number, wire: 0 | 2 | 5): void {
    this.varint((field << 3) | wire);
  }

  bytes(field: number, data: Uint8Array): void {
    this.key(field, 2);
    this.varint(data.length);
    this.reserve(data.length);
    this.buf.set(data, this.length);
    this.length += data.length;
  }

  string(field: number, s: string): void {
    this.bytes(field, new TextEncoder().encode(s));
  }

  int(field: number, v: number | bigint): void {
    this.key(field, 0);
    this.varint(v);
  }

  float(field: number, v: number): void {
    this.key(field, 5);
    this.reserve(4);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.length, 4).setFloat32(0, v, true);
    this.length += 4;
  }

  message(field: number, write: (w: Writer) => void): void {
    const sub = new Writer();
    write(sub);
    this.bytes(field, sub.finish());
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

export interface TensorValue {
  name: string;
  dataType: DataTypeId;
  dims: readonly number[];
  /** Little-endian element bytes (raw_data). */
  raw: Uint8Array;
  /** Stored in a separate file instead (data_location EXTERNAL): its name beside the .onnx file, and the byte range. */
  external?: { location: string; offset: number; length: number };
}

export type AttributeValue =
  | { kind: 'int'; value: number }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'float'; value: number }
  | { kind: 'floats'; value: readonly number[] }
  | { kind: 'string'; value: string }
  | { kind: 'tensor'; value: TensorValue };

export interface NodeValue {
  opType: string;
  name: string;
  inputs: readonly string[];
  outputs: readonly string[];
  attributes?: Record<string, AttributeValue>;
}

/** A dimension: a fixed size, or a symbolic name (dim_param) bound at run time. */
export type Dim = number | string;

export interface ValueInfo {
  name: string;
  dataType: DataTypeId;
  shape: readonly Dim[];
}

export interface ModelValue {
  irVersion: number;
  opsetVersion: number;
  producerName: string;
  producerVersion: string;
  graphName: string;
  nodes: readonly NodeValue[];
  initializers: readonly TensorValue[];
  inputs: readonly ValueInfo[];
  outputs: readonly ValueInfo[];
}

function writeTensor(w: Writer, t: TensorValue): void {
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.dataType);
  w.string(8, t.name);
  if (!t.external) {
    w.bytes(9, t.raw);
    return;
  }
  for (const [key, value] of [
    ['location', t.external.location],
    ['offset', String(t.external.offset)],
    ['length', String(t.external.length)],
  ]) {
    w.message(13, (e) => {
      e.string(1, key);
      e.string(2, value);
    });
  }
  w.int(14, 1);
}

function writeAttribute(w: Writer, name: string, a: AttributeValue): void {
  w.string(1, name);
  switch (a.kind) {
    case 'float':
      w.float(2, a.value);
      w.int(20, AttrType.FLOAT);
      break;
    case 'int':
      w.int(3, a.value);
      w.int(20, AttrType.INT);
      break;
    case 'string':
      w.string(4, a.value);
      w.int(20, AttrType.STRING);
      break;
    case 'tensor':
      w.message(5, (s) => writeTensor(s, a.value));
      w.int(20, AttrType.TENSOR);
      break;
    case 'floats':
      for (const v of a.value) w.float(7, v);
      w.int(20, AttrType.FLOATS);
      break;
    case 'ints':
      for (const v of a.value) w.int(8, v);
      w.int(20, AttrType.INTS);
      break;
  }
}

function writeValueInfo(w: Writer, v: ValueInfo): void {
  w.string(1, v.name);
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.int(1, v.dataType);
      tensor.message(2, (shape) => {
        for (const d of v.shape) shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
      });
    }),
  );
}

/** The serialized ModelProto (the bytes of a .onnx file). */
export function encodeModel(m: ModelValue): Uint8Array {
  const w = new Writer();
  w.int(1, m.irVersion);
  w.string(2, m.producerName);
  w.string(3, m.producerVersion);
  w.message(7, (g) => {
    for (const n of m.nodes) {
      g.message(1, (nw) => {
        for (const i of n.inputs) nw.string(1, i);
        for (const o of n.outputs) nw.string(2, o);
        nw.string(3, n.name);
        nw.string(4, n.opType);
        for (const [name, a] of Object.entries(n.attributes ?? {})) nw.message(5, (aw) => writeAttribute(aw, name, a));
      });
    }
    g.string(2, m.graphName);
    for (const t of m.initializers) g.message(5, (tw) => writeTensor(tw, t));
    for (const v of m.inputs) g.message(11, (vw) => writeValueInfo(vw, v));
    for (const v of m.outputs) g.message(12, (vw) => writeValueInfo(vw, v));
  });
  w.message(8, (o) => {
    o.string(1, '');
    o.int(2, m.opsetVersion);
  });
  return w.finish();
}
