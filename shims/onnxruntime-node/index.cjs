/**
 * Stand-in for onnxruntime-node, installed through package.json "overrides".
 *
 * @huggingface/transformers depends on onnxruntime-node (~290 MB of native
 * binaries) and loads it at import time in Node. PEFT Studio uses
 * transformers.js for tokenizers and chat templates, and runs ONNX models
 * with onnxruntime-web; so this package hands transformers.js
 * onnxruntime-web (its wasm backend runs in Node) with the wasm files read
 * from node_modules, never from a CDN.
 */
'use strict';
const path = require('node:path');
const ort = require('onnxruntime-web');

if (!ort.env.wasm.wasmPaths) {
  ort.env.wasm.wasmPaths = path.dirname(require.resolve('onnxruntime-web')) + '/';
}
module.exports = ort;
