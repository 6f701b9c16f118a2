/**
 * "A method is one folder": no file outside peft/<key>/ that the studio, the
 * CLI, the shared test helpers or the e2e tests are made of names a method by
 * its key as a string literal ('lora', "qlora", `vera`). Everything about a
 * method (options, family, FLOPs, form, kernels, selection flags) is asked of
 * the method itself; tests of a method live in its folder.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '../..');
const keys = readdirSync(path.join(root, 'peft')).filter((d) => statSync(path.join(root, 'peft', d)).isDirectory());
const SCANNED = ['src', 'tests/helpers', 'e2e'];
const TEXT = /\.(ts|mts|js|mjs|svelte|wgsl|json|html)$/;

function files(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else if (TEXT.test(name)) out.push(p);
  }
  return out;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
const quoted = new RegExp(`(['"\`])(${keys.map(escape).join('|')})\\1`, 'g');

describe('method keys stay in their folders', () => {
  it('finds the method folders it checks', () => {
    // The check is only as good as its key list: every folder with a method.ts is a method.
    expect(keys.length).toBeGreaterThanOrEqual(20);
    for (const k of keys) expect(readdirSync(path.join(root, 'peft', k)), k).toContain('method.ts');
  });

  it(`no quoted method key in ${SCANNED.join(', ')}`, () => {
    const hits: string[] = [];
    for (const dir of SCANNED) {
      for (const file of files(path.join(root, dir))) {
        readFileSync(file, 'utf8')
          .split('\n')
          .forEach((line, i) => {
            for (const m of line.matchAll(quoted)) hits.push(`${path.relative(root, file)}:${i + 1}: ${m[0]}`);
          });
      }
    }
    expect(hits, 'ask the method (PeftMethod: label, family, options, select, flops) instead of naming it').toEqual([]);
  });

  it('the pattern catches all three quote styles (so the empty list above means something)', () => {
    const k = keys[0];
    for (const q of [`'`, `"`, '`']) expect(`x = ${q}${k}${q};`.match(quoted)).toEqual([`${q}${k}${q}`]);
    expect(`x = '${k}_rank';`.match(quoted)).toBeNull();
  });
});
