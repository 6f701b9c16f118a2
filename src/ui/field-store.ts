/**
 * Where a form field reads and writes its value. The experiment's fields use
 * the page's config (studio.values); a screen with settings of its own (the
 * Evaluate screen's bounds, which must not end up in a training config)
 * passes its own store.
 */
export interface FieldStore {
  get(key: string): unknown;
  set(key: string, value: unknown): void;
  problems(key: string): string[];
}
