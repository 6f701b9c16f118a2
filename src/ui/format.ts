/** Display helpers. */

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return `${u === 0 ? n : n.toFixed(n < 10 ? 2 : 1)} ${units[u]}`;
}

/** Limits whose value is a byte count (the rest are counts). */
export function formatLimit(name: string, value: number): string {
  return /Size$/.test(name) ? formatBytes(value) : value.toLocaleString('en-US');
}

export function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} K`;
  return String(n);
}

export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

/** `v` with `digits` significant digits, trailing zeros dropped; exponent form below 1e-3 and from 1e6. */
function significant(v: number, digits: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e6) {
    const [mantissa, exp] = v.toExponential(digits - 1).split('e');
    return `${mantissa.replace(/\.?0+$/, '')}e${exp.replace('+', '')}`;
  }
  const fixed = v.toFixed(Math.max(0, digits - 1 - Math.floor(Math.log10(a))));
  return fixed.includes('.') ? fixed.replace(/\.?0+$/, '') : fixed;
}

/**
 * Axis tick labels: the fewest significant digits (up to 12) that keep every
 * label distinct, so ticks 0.001, 0.0012, 0.0014 are not all "0.001" (a
 * learning rate moving in its fourth digit).
 */
export function formatTicks(ticks: number[]): string[] {
  for (let digits = 1; digits < 12; digits++) {
    const labels = ticks.map((v) => significant(v, digits));
    if (new Set(labels).size === labels.length) return labels;
  }
  return ticks.map((v) => significant(v, 12));
}
