/**
 * Learning-rate schedules as transformers' get_scheduler (METHODS.md §23):
 * factor f(k) for optimizer step k (0-based; the first update uses k = 0).
 */
export type SchedulerType = 'linear' | 'cosine' | 'constant' | 'constant_with_warmup';

export function warmupSteps(total: number, warmupSteps: number, warmupRatio: number): number {
  return warmupSteps > 0 ? warmupSteps : Math.ceil(warmupRatio * total);
}

export function lrFactor(type: SchedulerType, k: number, total: number, W: number): number {
  if (type === 'constant') return 1;
  if (k < W) return k / Math.max(1, W);
  switch (type) {
    case 'constant_with_warmup':
      return 1;
    case 'linear':
      return Math.max(0, (total - k) / Math.max(1, total - W));
    case 'cosine': {
      const p = (k - W) / Math.max(1, total - W);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 2 * 0.5 * p)));
    }
  }
}
