/** The worker's GPU queue (src/worker/device.ts): one call at a time in call order; a long job lets queued calls run between its batches. */
import { describe, expect, it } from 'vitest';
import { DeviceSlot } from '../../src/worker/device';

const tick = () => new Promise((r) => setTimeout(r, 1));

describe('DeviceSlot queue', () => {
  it('runs calls one at a time, in call order, and goes on after a failure', async () => {
    const slot = new DeviceSlot(undefined);
    const log: string[] = [];
    const job = (name: string, fail = false) =>
      slot.exclusive(async () => {
        log.push(`${name}+`);
        await tick();
        log.push(`${name}-`);
        if (fail) throw new Error(name);
        return name;
      });
    const results = await Promise.allSettled([job('a'), job('b', true), job('c')]);
    expect(log).toEqual(['a+', 'a-', 'b+', 'b-', 'c+', 'c-']);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
  });

  it('yieldTurn lets the calls queued meanwhile run, then the long job continues before later ones', async () => {
    const slot = new DeviceSlot(undefined);
    const log: string[] = [];
    let release!: () => void;
    const queued = new Promise<void>((r) => (release = r));
    const long = slot.exclusive(async () => {
      for (let batch = 0; batch < 3; batch++) {
        log.push(`eval ${batch}`);
        if (batch === 0) await queued;
        await slot.yieldTurn();
      }
    });
    await tick();
    const gen = slot.exclusive(async () => void log.push('generate'));
    release();
    await Promise.all([long, gen]);
    expect(log).toEqual(['eval 0', 'generate', 'eval 1', 'eval 2']);
    // With nothing queued, yieldTurn keeps the device.
    let inside = false;
    await slot.exclusive(async () => {
      await slot.yieldTurn();
      inside = true;
    });
    expect(inside).toBe(true);
  });
});
