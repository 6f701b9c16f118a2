import { describe, it, expect, beforeAll } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { maxAbsDiff, randn, rng } from '../helpers/check-op';
import { storiesDir } from '../helpers/models';
import type { Engine } from '../../src/engine/engine';
import { Tape } from '../../src/engine/tape';
import { LocalFolderSource } from '../../src/hub/node';
import { loadModel } from '../../src/model/load';
import type { LlamaModel } from '../../src/model/llama';
import { seededRandom } from '../../src/model/generate';
import { languageModelLoss } from '../../src/train/loss';
import { logitRowsPerBinding } from '../../src/model/logits';
import { lora } from '../../peft/lora/method';

let e: Engine;
beforeAll(async () => {
  e = await gpuEngine();
});

const B = 2,
  T = 14;
const ids = Int32Array.from({ length: B * T }, (_, i) => 3 + ((i * 37 + 11) % 500));
// Shifted targets with untrained positions (-100), as the trainer collates them.
const targets = Int32Array.from({ length: B * T }, (_, i) => (i % T === T - 1 || i % 5 === 0 ? -100 : ids[i + 1]));

async function lossAndGrads(model: LlamaModel) {
  const m = lora.attach({ e, model, config: { lora_rank: 4, lora_alpha: 8, lora_target: ['q_proj', 'v_proj'] }, random: seededRandom(5) });
  // B = 0 at init gives dA = 0: start B away from zero so both factors get gradients.
  for (const p of m.trainable()) if (p.tensor.name.endsWith('lora_B')) e.write(p.tensor, randn(p.tensor.size, rng(p.tensor.size), 0.1));
  e.beginScope();
  const tape = new Tape();
  e.tape = tape;
  const loss = languageModelLoss(e, model, { ids, targets, B, T });
  e.tape = null;
  tape.backward(loss, 1);
  const value = (await e.read(loss))[0];
  e.endScope();
  // Without a tape (the validation loss), chunked, every chunk runs in its own scope; the running sum survives them.
  e.beginScope();
  const untaped = (await e.read(languageModelLoss(e, model, { ids, targets, B, T })))[0];
  e.endScope();
  const grads = new Map<string, Float32Array>();
  for (const p of m.trainable()) grads.set(p.tensor.name, await e.read(p.tensor.grad!));
  m.detach();
  return { value, untaped, grads };
}

describe('language-model loss over logits larger than one binding', () => {
  it('stories260K under a 24 KiB binding limit: the head and cross-entropy run on row chunks with the same loss and LoRA gradients', async () => {
    const whole = (await loadModel(e, new LocalFolderSource(storiesDir()), { tokenizer: false, baseDtype: 'float32' })).model;
    const a = await lossAndGrads(whole);
    const limit = e.maxBindingBytes;
    e.maxBindingBytes = 24 * 1024;
    try {
      // 24 KiB / (512 × 4 B) = 12 rows of logits per chunk: 28 tokens take 3 chunks.
      expect(logitRowsPerBinding(e, 512)).toBe(12);
      const split = (await loadModel(e, new LocalFolderSource(storiesDir()), { tokenizer: false, baseDtype: 'float32' })).model;
      const b = await lossAndGrads(split);
      expect(Math.abs(b.untaped - a.value)).toBeLessThan(1e-4 * a.value);
      expect(Number.isFinite(a.value) && a.value > 0).toBe(true);
      expect(Math.abs(b.value - a.value)).toBeLessThan(1e-4 * a.value);
      for (const [k, g] of a.grads) {
        const scale = g.reduce((mx, v) => Math.max(mx, Math.abs(v)), 0);
        expect(scale, k).toBeGreaterThan(0);
        expect(maxAbsDiff(g, b.grads.get(k)!), k).toBeLessThan(1e-5 * Math.max(1, scale));
      }
      split.dispose();
    } finally {
      e.maxBindingBytes = limit;
    }
    whole.dispose();
  });
});
