/**
 * `peft-studio methods` lists the methods without a GPU: only `--counts`
 * builds a model, so the plain list must not start WebGPU (on a machine
 * without one it printed driver errors before the table).
 */
import { describe, expect, it } from 'vitest';
import { methodsCommand } from '../../src/cli/methods';

describe('methods command', () => {
  it('lists every built-in method without asking for an engine; --counts asks for one', async () => {
    let asked = 0;
    const noGpu = async () => {
      asked++;
      throw new Error('no GPU here');
    };
    const out = await methodsCommand([], { dirs: [], installed: [] }, noGpu);
    expect(asked).toBe(0);
    expect(out).toMatch(/^finetuning_type\s+kind\s+peft_type\s+source$/m);
    expect(out).toMatch(/^lora\s+built-in\s+LORA\s/m);
    await expect(methodsCommand(['--counts'], { dirs: [], installed: [] }, noGpu)).rejects.toThrow('no GPU here');
    expect(asked).toBe(1);
  });
});
