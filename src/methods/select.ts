/**
 * Which installed method a config selects, from plain method descriptions
 * (MethodInfo), so the worker's registry and the page's forms apply one rule.
 *
 * finetuning_type names a method folder. LLaMA-Factory also selects some
 * methods with a flag on another type (its QLoRA is finetuning_type lora with
 * quantization_bit 4): such a method declares `select` (its base type, the
 * flag key and the value a form writes), and a config of that type with the
 * flag set (not null, undefined or false) selects it.
 */

/** What the page and listings know about an installed method (plain data). */
export interface MethodInfo {
  name: string;
  label: string;
  family: string;
  description: string;
  order: number;
  kind: 'built-in' | 'plug-in';
  /** Keys its form shows, in order (its options without the selecting flag). */
  options: string[];
  /** Keys it needs set although the schema allows them unset. */
  required: string[];
  select?: { finetuning_type: string; key: string; value: unknown };
  /** finetuning_type's default. */
  isDefault: boolean;
}

const isSet = (v: unknown) => v !== undefined && v !== null && v !== false;

/** Methods in list order: by `order` (built-ins: METHODS.md sections), then name. */
export function methodListing(infos: MethodInfo[]): MethodInfo[] {
  return [...infos].sort((a, b) => a.order - b.order || a.name.localeCompare(b.name));
}

/**
 * The methods a config selects, the effective one first: every flagged
 * method whose flag is set on its base type, else finetuning_type itself
 * (more than one is a config problem the registry reports).
 */
export function selectedMethods(config: Record<string, unknown>, infos: MethodInfo[]): string[] {
  const type = String(config.finetuning_type ?? infos.find((i) => i.isDefault)?.name ?? '');
  const flagged = infos.filter((i) => i.select && i.select.finetuning_type === type && isSet(config[i.select.key])).map((i) => i.name);
  return flagged.length ? flagged : [type];
}

/**
 * The config keys that pick method `name` in a form: its finetuning_type and
 * its flag on, every other method's flag off (`off(key)`: the flag's default).
 */
export function selectionKeys(name: string, infos: MethodInfo[], off: (key: string) => unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const i of infos) if (i.select) out[i.select.key] = off(i.select.key);
  const me = infos.find((i) => i.name === name);
  if (me?.select) {
    out.finetuning_type = me.select.finetuning_type;
    out[me.select.key] = me.select.value;
  } else {
    out.finetuning_type = name;
  }
  return out;
}

/**
 * Problems a config has with the methods as described (no method code runs):
 * flags that select two methods at once, and options the selected method
 * requires left unset. The registry adds each method's own configProblems.
 */
export function selectionProblems(config: Record<string, unknown>, infos: MethodInfo[], help: (key: string) => string = () => ''): string[] {
  const p: string[] = [];
  const chosen = selectedMethods(config, infos);
  if (chosen.length > 1) {
    const flags = chosen.map((n) => infos.find((i) => i.name === n)?.select?.key).filter(Boolean);
    p.push(`${flags[0]}: ${flags.join(' and ')} each select a method (${chosen.join(', ')}); they do not combine. Set only one of them.`);
  }
  const info = infos.find((i) => i.name === chosen[0]);
  for (const key of info?.required ?? []) {
    if (config[key] === null || config[key] === undefined) p.push(`${key}: required by ${info!.label}. ${help(key)}`.trim());
  }
  return p;
}
