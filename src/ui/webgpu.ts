/**
 * The quick WebGPU check on the page itself, before the worker starts. The
 * worker's `gpuInfo()` is the real test (an adapter can still be missing).
 */
import type { GpuInfo } from '../worker/api';
import type { Problem } from './errors';

export type GpuState = { status: 'checking' } | { status: 'ready'; info: GpuInfo } | { status: 'unavailable'; problem: Problem };

/** Where WebGPU works today, for the message shown when it does not. */
export const WEBGPU_BROWSERS = [
  'Chrome or Edge 113+ on Windows, macOS and ChromeOS; Chrome 121+ on Android.',
  'Chrome or Chromium on Linux: enable chrome://flags/#enable-unsafe-webgpu and #enable-vulkan, or start it with --enable-unsafe-webgpu (headless, without a GPU: add --enable-unsafe-swiftshader --use-webgpu-adapter=swiftshader).',
  'Safari 26+ on macOS, iOS and iPadOS.',
  'Firefox 141+ on Windows; elsewhere Firefox Nightly, or dom.webgpu.enabled in about:config.',
];

/** Why this page cannot have WebGPU, or null when navigator.gpu is there. */
export function webgpuMissing(): string | null {
  if (!window.isSecureContext) {
    return `This page (${location.origin}) is not a secure context, and browsers expose WebGPU only to https:// pages and localhost. Open it over https or from localhost.`;
  }
  if (!('gpu' in navigator) || !navigator.gpu) {
    return 'This browser does not expose WebGPU (navigator.gpu is missing).';
  }
  return null;
}
