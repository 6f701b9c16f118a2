/**
 * The ONNX worker: onnxruntime-web runs an exported model here, apart from
 * the engine worker (see ./onnx-runner.ts, ../ui/onnx.ts). Created only when
 * the Playground first runs an ONNX export.
 */
import * as Comlink from 'comlink';
import { OnnxRunner } from './onnx-runner';

Comlink.expose(new OnnxRunner());
