/**
 * Every named error class in src/ gets its own heading in the studio: a class
 * without one showed "Something went wrong" above its message (a share link
 * with a typo, a full browser storage, a diverged run).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeError, TITLED_ERRORS } from '../../src/ui/errors';

const SRC = path.resolve(import.meta.dirname, '../../src');

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? tsFiles(path.join(dir, d.name)) : d.name.endsWith('.ts') ? [path.join(dir, d.name)] : [],
  );
}

describe('studio error headings', () => {
  it('every error class named in src/ has a heading', () => {
    const names = new Set<string>();
    for (const f of tsFiles(SRC)) for (const m of readFileSync(f, 'utf8').matchAll(/override name = '(\w+Error)'/g)) names.add(m[1]);
    names.delete('PeftStudioError'); // the base class, never thrown itself
    expect(names.size).toBeGreaterThan(15);
    expect([...names].filter((n) => !TITLED_ERRORS.includes(n)).sort()).toEqual([]);
  });

  it('a share link error is titled as one, with its message', () => {
    const e = Object.assign(new Error("This link's experiment is not a valid config"), { name: 'ShareLinkError' });
    expect(describeError(e)).toEqual({ name: 'ShareLinkError', title: 'This link cannot be opened', message: "This link's experiment is not a valid config" });
    expect(describeError(new Error('x')).title).toBe('Something went wrong');
  });
});
