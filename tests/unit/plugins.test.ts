/**
 * Method plug-ins (src/methods/plugins.ts, registry.ts): PEFT_DIR scanning in
 * this process, every validation error, atomic installation, the plug-in API
 * matching package.json "exports", and that configs can only name installed
 * methods. (Kernel compilation and the CLI: tests/gpu/plugins-cli.test.ts.)
 */
import { describe, it, expect } from 'vitest';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadPlugins, pluginApi, pluginDirs } from '../../src/methods/plugins';
import { installedMethods, resolveMethod } from '../../src/methods/registry';
import { optionSpec, validateConfig } from '../../src/config/schema';
import { ConfigError, PluginError } from '../../src/errors';

const template = path.resolve('templates/method');

/** A PEFT_DIR with one folder per entry: file name → text (null: copy the template's file, renamed to `name`). */
function peftDir(folders: Record<string, Record<string, string | null>>): string {
  const root = mkdtempSync(path.join(tmpdir(), 'ps-plugins-'));
  for (const [name, files] of Object.entries(folders)) {
    const dir = path.join(root, name);
    mkdirSync(dir, { recursive: true });
    for (const [file, text] of Object.entries(files)) writeFileSync(path.join(dir, file), text ?? renamed(file, name));
  }
  return root;
}

/** A template file with the method renamed (name, group, key prefix, peft_type). */
function renamed(file: string, name: string): string {
  const id = name.replace(/-/g, '_');
  return readFileSync(path.join(template, file), 'utf8')
    .replaceAll("'my-method'", `'${name}'`)
    .replaceAll('my_method_', `${id}_`)
    .replaceAll('MY_METHOD', id.toUpperCase());
}

const templateFiles = { 'config.ts': null, 'method.ts': null, 'kernel.ts': null, 'kernel.wgsl': null };
const minimalMethod = (name: string) =>
  `export default { name: '${name}', description: 'A test method.', flops: () => ({ flops: 0 }), attach() { throw new Error('not used'); } };\n`;

async function problems(dir: string): Promise<string> {
  try {
    await loadPlugins({ peftDir: dir, warn: () => {} });
  } catch (err) {
    expect(err).toBeInstanceOf(PluginError);
    return (err as Error).message;
  }
  throw new Error('expected a PluginError');
}

describe('method plug-ins', () => {
  it('the plug-in API is exactly package.json "exports" (minus package.json and the test helpers)', () => {
    const exportsMap = JSON.parse(readFileSync('package.json', 'utf8')).exports as Record<string, string>;
    const fromPackage: string[] = [];
    for (const [k, v] of Object.entries(exportsMap)) {
      if (k === './package.json' || k.startsWith('./testing/')) continue;
      if (!k.includes('*')) fromPackage.push(k.slice(2));
      else {
        const dir = path.dirname(v);
        for (const f of readdirSync(dir).filter((f) => f.endsWith('.ts'))) fromPackage.push(k.slice(2).replace('*', f.slice(0, -3)));
      }
    }
    expect(Object.keys(pluginApi).sort()).toEqual(fromPackage.sort());
    expect(pluginApi['engine/ops/matmul'].matmul).toBeTypeOf('function');
    expect(pluginApi['methods/types'].matchTargets).toBeTypeOf('function');
  });

  it('installs a plug-in from a folder outside the repo: resolveMethod finds it, its options validate, its imports are the running modules', async () => {
    const dir = peftDir({ 'plug-ok': templateFiles, _shared: { 'notes.txt': 'x' }, '.hidden': { 'config.ts': 'syntax error here' } });
    const scan = await loadPlugins({ peftDir: dir, warn: () => {} });
    expect(scan.installed.map((m) => [m.name, m.kind, m.source, m.options])).toEqual([
      ['plug-ok', 'plug-in', path.join(dir, 'plug-ok'), ['plug_ok_target', 'plug_ok_init']],
    ]);
    const m = resolveMethod({ finetuning_type: 'plug-ok' });
    expect(m.name).toBe('plug-ok');
    expect(m.peftType).toBe('PLUG_OK');
    expect(installedMethods().find((x) => x.name === 'plug-ok')?.method).toBe(m);
    const base = { model_name_or_path: 'm', output_dir: 'o', dataset: 'd.jsonl' };
    expect(validateConfig({ ...base, finetuning_type: 'plug-ok', plug_ok_init: 0.5 })).toMatchObject({
      plug_ok_target: ['q_proj', 'v_proj'],
      plug_ok_init: 0.5,
    });
    expect(() => validateConfig({ ...base, finetuning_type: 'plug-ok', plug_ok_init: 'x' })).toThrow(/plug_ok_init: expected a number/);
    expect(optionSpec('plug_ok_init')?.group).toBe('plug-ok');
  });

  it('missing config.ts or method.ts', async () => {
    const msg = await problems(peftDir({ 'no-config': { 'method.ts': minimalMethod('no-config') }, 'no-method': { 'config.ts': 'export const o = [];\n' } }));
    expect(msg).toMatch(/2 problems/);
    expect(msg).toMatch(/no-config: missing config\.ts \(its options: export arrays of OptionSpec/);
    expect(msg).toMatch(/no-method: missing method\.ts \(`export default` a PeftMethod \{ name: 'no-method'/);
  });

  it('method.ts: no default export, not an object, no attach, no name, a name that is not the folder', async () => {
    const msg = await problems(
      peftDir({
        'm-nodefault': { 'config.ts': '', 'method.ts': "export const m = { name: 'm-nodefault', attach() {} };\n" },
        'm-number': { 'config.ts': '', 'method.ts': 'export default 42;\n' },
        'm-noattach': { 'config.ts': '', 'method.ts': "export default { name: 'm-noattach' };\n" },
        'm-noname': { 'config.ts': '', 'method.ts': 'export default { attach() {} };\n' },
        'm-wrongname': { 'config.ts': '', 'method.ts': "export default { name: 'other', attach() {} };\n" },
        'm-badtypes': { 'config.ts': '', 'method.ts': "export default { name: 'm-badtypes', attach() {}, peftType: 3, configFromAdapter: 'x' };\n" },
      }),
    );
    expect(msg).toMatch(/m-nodefault\/method\.ts has no default export; end it with `export default \{ name: 'm-nodefault', attach\(ctx\)/);
    expect(msg).toMatch(/m-number\/method\.ts: the default export is 42, not a PeftMethod object/);
    expect(msg).toMatch(/m-noattach\/method\.ts: the default export has no attach\(ctx\) function/);
    expect(msg).toMatch(/m-noname\/method\.ts: the default export has no 'name' string; it must be 'm-noname'/);
    expect(msg).toMatch(/m-wrongname\/method\.ts: the method is named 'other' but its folder is 'm-wrongname'/);
    expect(msg).toMatch(/m-badtypes\/method\.ts: peftType is 3; it must be a string/);
    expect(msg).toMatch(/m-badtypes\/method\.ts: configFromAdapter must be a function/);
    // PSCP needs every method's FLOPs, and forms its one-line description.
    expect(msg).toMatch(/m-noattach\/method\.ts: the default export has no flops\(ctx\) function; PSCP needs the FLOPs/);
    expect(msg).toMatch(/m-noattach\/method\.ts: the default export has no description/);
  });

  it('a file that does not parse, a throwing module, an import outside the plug-in API, a missing relative import', async () => {
    const msg = await problems(
      peftDir({
        'p-syntax': { 'config.ts': "export const opts = [\n  { key: 'p_syntax_x', type: 'int' default: 1 },\n];\n", 'method.ts': minimalMethod('p-syntax') },
        'p-throws': { 'config.ts': "throw new Error('config exploded');\n", 'method.ts': minimalMethod('p-throws') },
        'p-api': {
          'config.ts': '',
          'method.ts': "import { loadModel } from 'peft-studio/model/load';\nexport default { name: 'p-api', attach: loadModel };\n",
        },
        'p-relative': { 'config.ts': '', 'method.ts': "import { x } from './helpers';\nexport default { name: 'p-relative', attach: x };\n" },
      }),
    );
    // esbuild's message names the file, line and column.
    expect(msg).toMatch(/p-syntax\/config\.ts does not load: [\s\S]*config\.ts:2:\d+: ERROR: Expected "}" but found "default"/);
    expect(msg).toMatch(/p-throws\/config\.ts does not load: config exploded/);
    expect(msg).toMatch(
      /'peft-studio\/model\/load' \(imported by \S*p-api\/method\.ts\) is not part of PEFT Studio's plug-in API\. Importable: peft-studio\/config\/schema, .*peft-studio\/engine\/ops\/\{.*matmul/,
    );
    expect(msg).toMatch(/p-relative\/method\.ts does not load: .*(Cannot find module|helpers)/);
  });

  it('config.ts schema errors: unknown type, missing help, wrong group, enum without choices, bad default, misspelled field, bad key', async () => {
    const spec = (fields: string) => `export const opts = [{ ${fields} }];\n`;
    const msg = await problems(
      peftDir({
        'c-type': { 'config.ts': spec("key: 'c_type_x', type: 'integer', default: 1, help: 'h', group: 'c-type'"), 'method.ts': minimalMethod('c-type') },
        'c-help': { 'config.ts': spec("key: 'c_help_x', type: 'int', default: 1, group: 'c-help'"), 'method.ts': minimalMethod('c-help') },
        'c-group': { 'config.ts': spec("key: 'c_group_x', type: 'int', default: 1, help: 'h', group: 'lora'"), 'method.ts': minimalMethod('c-group') },
        'c-enum': { 'config.ts': spec("key: 'c_enum_x', type: 'enum', default: 'a', help: 'h', group: 'c-enum'"), 'method.ts': minimalMethod('c-enum') },
        'c-default': {
          'config.ts': spec("key: 'c_default_x', type: 'int', default: 0, min: 1, help: 'h', group: 'c-default'"),
          'method.ts': minimalMethod('c-default'),
        },
        'c-field': { 'config.ts': spec("key: 'c_field_x', type: 'int', defualt: 1, help: 'h', group: 'c-field'"), 'method.ts': minimalMethod('c-field') },
        'c-key': { 'config.ts': spec("key: 'C-Key', type: 'int', default: 1, help: 'h', group: 'c-key'"), 'method.ts': minimalMethod('c-key') },
        'c-entry': { 'config.ts': "export const opts = ['c_entry_x'];\n", 'method.ts': minimalMethod('c-entry') },
      }),
    );
    expect(msg).toMatch(/c-type\/config\.ts export 'opts'\[0\] \(key 'c_type_x'\): type "integer" is not one of int, float, bool, string, enum, string-list/);
    expect(msg).toMatch(/c-help\/config\.ts export 'opts'\[0\] \(key 'c_help_x'\): help is missing/);
    expect(msg).toMatch(/\(key 'c_group_x'\): group is "lora" but must be the method name 'c-group'/);
    expect(msg).toMatch(/\(key 'c_enum_x'\): an enum needs choices/);
    expect(msg).toMatch(/\(key 'c_default_x'\): default 0 is outside its own range \[1, ∞\]/);
    expect(msg).toMatch(/\(key 'c_field_x'\): unknown field 'defualt' \(did you mean 'default'\?\)/);
    expect(msg).toMatch(/key "C-Key" must be a snake_case string/);
    expect(msg).toMatch(/c-entry\/config\.ts export 'opts'\[0\] is "c_entry_x", not an OptionSpec object/);
    // Nothing of a failed scan is installed.
    expect(optionSpec('c_help_x')).toBeUndefined();
    expect(() => resolveMethod({ finetuning_type: 'c-type' })).toThrow(ConfigError);
  });

  it('duplicate option keys: twice in one config.ts, a built-in key, the key of another plug-in', async () => {
    const opt = (key: string, group: string) => `{ key: '${key}', type: 'int', default: 1, help: 'h', group: '${group}' }`;
    const msg = await problems(
      peftDir({
        'd-twice': {
          'config.ts': `export const a = [${opt('d_twice_x', 'd-twice')}];\nexport const b = [${opt('d_twice_x', 'd-twice')}];\n`,
          'method.ts': minimalMethod('d-twice'),
        },
        'd-builtin': { 'config.ts': `export const a = [${opt('lora_rank', 'd-builtin')}];\n`, 'method.ts': minimalMethod('d-builtin') },
        'd-first': { 'config.ts': `export const a = [${opt('d_shared', 'd-first')}];\n`, 'method.ts': minimalMethod('d-first') },
        'd-second': { 'config.ts': `export const a = [${opt('d_shared', 'd-second')}];\n`, 'method.ts': minimalMethod('d-second') },
      }),
    );
    expect(msg).toMatch(/d-twice\/config\.ts export 'b'\[0\]: key 'd_twice_x' is defined twice in \S+ \(also in export 'a'\)/);
    expect(msg).toMatch(
      /d-builtin\/config\.ts export 'a'\[0\]: key 'lora_rank' is already defined by group 'lora' \(peft\/lora\); .*prefix yours \(e\.g\. 'd_builtin_lora_rank'\)/,
    );
    expect(msg).toMatch(/d-second\/config\.ts export 'a'\[0\]: key 'd_shared' is already defined by group 'd-first'/);
  });

  it('name collisions: with a built-in method, between plug-ins of two PEFT_DIR folders; an invalid folder name', async () => {
    const a = peftDir({
      lora: { 'config.ts': '', 'method.ts': minimalMethod('lora') },
      twin: { 'config.ts': '', 'method.ts': minimalMethod('twin') },
      'Bad Name': { 'config.ts': '', 'method.ts': minimalMethod('Bad Name') },
    });
    const b = peftDir({ twin: { 'config.ts': '', 'method.ts': minimalMethod('twin') } });
    const msg = await problems(`${a}${path.delimiter}${b}`);
    expect(msg).toMatch(/lora: method 'lora' collides with the built-in method 'lora' from peft\/lora; rename the folder and the method's name/);
    expect(msg).toContain(`${path.join(b, 'twin')}: method 'twin' collides with the plug-in 'twin' from ${path.join(a, 'twin')}`);
    expect(msg).toMatch(/the folder name 'Bad Name' is not a valid method name/);
    expect(resolveMethod({ finetuning_type: 'lora' }).name).toBe('lora');
    expect(() => resolveMethod({ finetuning_type: 'twin' })).toThrow(/No method 'twin' is installed/);
  });

  it('PEFT_DIR: local folders only (a URL is refused), a missing folder, a plug-in folder given instead of its parent', async () => {
    for (const url of ['https://example.com/plugins', 'http://x/y', 'file:///tmp/plugins', 'data:text/javascript,export default 1']) {
      expect(() => pluginDirs({ peftDir: url })).toThrow(/is a URL\. Methods are code: PEFT Studio loads them only from local folders/);
      await expect(loadPlugins({ peftDir: url })).rejects.toThrow(PluginError);
    }
    const missing = path.join(tmpdir(), 'ps-no-such-dir-' + process.pid);
    expect(await problems(missing)).toContain(`PEFT_DIR folder ${missing} does not exist`);
    const root = peftDir({ inner: templateFiles });
    expect(await problems(path.join(root, 'inner'))).toContain(
      `is a plug-in folder itself; PEFT_DIR names the folder that contains plug-in folders: use PEFT_DIR=${root}`,
    );
    // Unset PEFT_DIR: no folder at all (plug-ins are opt-in; ./peft of the working directory is not scanned).
    expect(pluginDirs({ peftDir: '', cwd: '/somewhere' })).toEqual({ dirs: [], explicit: false });
    await expect(loadPlugins({ peftDir: '', cwd: tmpdir() })).resolves.toMatchObject({ dirs: [], installed: [] });
  });

  it("the project's own peft/ is bundled: scanning it installs nothing new and loads no code", async () => {
    const before = installedMethods().length;
    const notes: string[] = [];
    const scan = await loadPlugins({ peftDir: path.resolve('peft'), warn: (s) => notes.push(s) });
    expect(scan.installed).toEqual([]);
    expect(installedMethods().length).toBe(before);
    for (const n of notes) expect(n).toMatch(/is not in this build of the CLI; run `npm run build:cli`/);
  });

  it('a config names an installed method; a path or URL in finetuning_type is rejected, never loaded', async () => {
    // A plug-in folder that would leave a mark if its code ever ran.
    const root = mkdtempSync(path.join(tmpdir(), 'ps-evil-'));
    const mark = path.join(root, 'LOADED');
    cpSync(template, path.join(root, 'evil'), { recursive: true });
    writeFileSync(
      path.join(root, 'evil', 'method.ts'),
      `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(mark)}, 'x');\nexport default { name: 'evil', attach() {} };\n`,
    );
    const base = { model_name_or_path: 'm', output_dir: 'o', dataset: 'd.jsonl' };
    for (const t of ['../../evil', path.join(root, 'evil'), path.join(root, 'evil', 'method.ts'), 'https://example.com/evil/method.js', 'evil']) {
      expect(() => validateConfig({ ...base, finetuning_type: t })).toThrow(/finetuning_type: '.*' is not one of .*lora/);
      expect(() => resolveMethod({ finetuning_type: t })).toThrow(/No method '.*' is installed \(finetuning_type .*\)\. Available: .*lora.*vera/);
    }
    expect(() => resolveMethod({ finetuning_type: '../../evil' })).toThrow(/never a path or URL: methods are code/);
    expect(() => resolveMethod({ finetuning_type: 'https://example.com/evil/method.js' })).toThrow(/never a path or URL/);
    expect(readdirSync(root)).toEqual(['evil']);
  });
});
