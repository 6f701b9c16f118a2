/**
 * Device acquisition for both hosts. The caller injects a `GPU` object:
 * `navigator.gpu` in the browser, the `webgpu` package's `create()` in Node
 * (see ./node.ts), so the browser bundle never imports Dawn.
 */
import { AdapterLimitError, DeviceLostError, GpuError, WebGPUNotAvailableError } from '../errors';
import { BufferPool } from './pool';

/** Limits the engine asks for; the adapter must meet these minimums. */
export interface LimitNeeds {
  maxStorageBufferBindingSize?: number;
  maxBufferSize?: number;
  maxStorageBuffersPerShaderStage?: number;
  maxComputeWorkgroupStorageSize?: number;
  maxComputeInvocationsPerWorkgroup?: number;
}

export const DEFAULT_NEEDS: Required<LimitNeeds> = {
  maxStorageBufferBindingSize: 128 << 20,
  maxBufferSize: 256 << 20,
  maxStorageBuffersPerShaderStage: 8,
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
};

export interface AcquireOptions {
  needs?: LimitNeeds;
  /** Ask for timestamp-query when the adapter has it (per-kernel timings). */
  timestamps?: boolean;
  powerPreference?: GPUPowerPreference;
  /** Called once when the device is lost unexpectedly. */
  onLost?: (err: DeviceLostError) => void;
}

export interface GpuContext {
  device: GPUDevice;
  adapterInfo: { vendor: string; architecture: string; device: string; description: string };
  features: Set<string>;
  limits: GPUSupportedLimits;
  pool: BufferPool;
  /** Set when the device was lost; every later call should throw it. */
  lost: DeviceLostError | null;
  /** Tear down on purpose; the lost handler does not report this as a crash. */
  destroy(): void;
}

/**
 * A CPU implementation of WebGPU (SwiftShader, llvmpipe/lavapipe): kernels
 * whose best shape differs between CPUs and GPUs (register block sizes) ask
 * this to pick theirs.
 */
export function isCpuAdapter(info: GpuContext['adapterInfo']): boolean {
  const s = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`.toLowerCase();
  return /swiftshader|llvmpipe|lavapipe|software/.test(s);
}

export async function acquireDevice(gpu: GPU | undefined | null, opts: AcquireOptions = {}): Promise<GpuContext> {
  if (!gpu) {
    throw new WebGPUNotAvailableError(
      'WebGPU is not available here. Use Chrome or Edge 113+ (or Chromium with --enable-unsafe-webgpu), Safari 26+, or Firefox 141+ on Windows.',
    );
  }
  const adapter = await gpu.requestAdapter({ powerPreference: opts.powerPreference ?? 'high-performance' });
  if (!adapter) throw new WebGPUNotAvailableError('WebGPU is present but no GPU adapter was found (requestAdapter returned null).');
  const needs = { ...DEFAULT_NEEDS, ...opts.needs };
  const requiredLimits: Record<string, number> = {};
  for (const [k, v] of Object.entries(needs)) {
    const have = (adapter.limits as unknown as Record<string, number>)[k];
    if (have < v) {
      throw new AdapterLimitError(`This GPU adapter's ${k} is ${have}, below the ${v} the model needs.`);
    }
    // Ask for all the adapter has: large tensors need the biggest bindings.
    requiredLimits[k] = have;
  }
  const requiredFeatures: GPUFeatureName[] = [];
  if (opts.timestamps && adapter.features.has('timestamp-query')) requiredFeatures.push('timestamp-query');
  // Subgroup operations let the v6 matmul share loads across lanes (src/engine/ops/matmul.ts).
  if (adapter.features.has('subgroups' as GPUFeatureName)) requiredFeatures.push('subgroups' as GPUFeatureName);
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  const info = adapter.info ?? ({} as GPUAdapterInfo);
  const ctx: GpuContext = {
    device,
    adapterInfo: {
      vendor: info.vendor ?? '',
      architecture: info.architecture ?? '',
      device: info.device ?? '',
      description: info.description ?? '',
    },
    features: new Set([...device.features] as string[]),
    limits: device.limits,
    pool: new BufferPool(device, device.limits.maxBufferSize),
    lost: null,
    destroy() {
      intentional = true;
      ctx.pool.trim();
      device.destroy();
    },
  };
  let intentional = false;
  device.lost.then((info) => {
    // Only ctx.destroy() tears a device down on purpose; any other end (a driver reset, a crashed GPU process, a
    // destroy() from elsewhere, as the studio's device-loss test does) is a loss the user must hear about.
    if (intentional) return;
    const err = new DeviceLostError(
      `The GPU device was lost (${info.reason}): ${info.message.replace(/\.+$/, '')}. The last checkpoint is kept: resume the run from it (reload the page if the GPU does not come back).`,
      info.reason,
    );
    ctx.lost = err;
    opts.onLost?.(err);
  });
  return ctx;
}

/**
 * Run `fn` inside out-of-memory and validation error scopes without waiting:
 * WebGPU reports these errors asynchronously, so the first one is handed to
 * `report` (the engine keeps it and throws it at the next sync or readback).
 */
export function scoped<T>(device: GPUDevice, what: string, fn: () => T, report: (err: GpuError) => void): T {
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  let out: T;
  try {
    out = fn();
  } finally {
    device.popErrorScope().then((v) => {
      if (v) report(new GpuError(`GPU validation error while ${what}: ${v.message}`));
    });
    device.popErrorScope().then((oom) => {
      if (oom) report(new GpuError(`Out of GPU memory while ${what}: ${oom.message}. Use a smaller batch, sequence length or model.`));
    });
  }
  return out;
}
