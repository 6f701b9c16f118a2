/**
 * A small arithmetic evaluator for generated equations (SVAMP), so that a
 * model's text is never handed to eval or Function. Grammar:
 *
 *   expr   := term   (('+' | '-') term)*
 *   term   := factor (('*' | '/') factor)*
 *   factor := ('+' | '-') factor | number | '(' expr ')'
 *   number := digits ['.' digits] | '.' digits
 *
 * Whitespace is ignored; left-associative; the usual precedence. Anything
 * else (names, commas, '^', '%', unbalanced parentheses, trailing text) is a
 * parse error. Division by zero or any non-finite result is an error too.
 * Evaluation is in float64 (Python's float, which PEFT-Factory's checker uses).
 */

export type ArithmeticResult = { value: number } | { error: string };

export function evaluateArithmetic(source: string): ArithmeticResult {
  let pos = 0;
  const fail = (msg: string): never => {
    throw new ParseError(`${msg} at position ${pos} of ${JSON.stringify(source)}`);
  };
  const skip = () => {
    while (pos < source.length && /\s/.test(source[pos])) pos++;
  };
  const peek = (): string => {
    skip();
    return source[pos] ?? '';
  };
  // Deep nesting is rejected rather than exhausting the stack.
  let depth = 0;
  const expr = (): number => {
    let v = term();
    for (let c = peek(); c === '+' || c === '-'; c = peek()) {
      pos++;
      const r = term();
      v = c === '+' ? v + r : v - r;
    }
    return v;
  };
  const term = (): number => {
    let v = factor();
    for (let c = peek(); c === '*' || c === '/'; c = peek()) {
      pos++;
      const r = factor();
      if (c === '/' && r === 0) fail('division by zero');
      v = c === '*' ? v * r : v / r;
    }
    return v;
  };
  const factor = (): number => {
    if (++depth > 200) fail('expression nested too deeply');
    try {
      const c = peek();
      if (c === '+' || c === '-') {
        pos++;
        const v = factor();
        return c === '-' ? -v : v;
      }
      if (c === '(') {
        pos++;
        const v = expr();
        if (peek() !== ')') fail("expected ')'");
        pos++;
        return v;
      }
      const m = /^(?:\d+(?:\.\d*)?|\.\d+)/.exec(source.slice(pos));
      if (!m) fail(c ? `unexpected ${JSON.stringify(c)}` : 'unexpected end');
      pos += m![0].length;
      return Number(m![0]);
    } finally {
      depth--;
    }
  };
  try {
    if (peek() === '') fail('empty expression');
    const value = expr();
    if (peek() !== '') fail(`unexpected ${JSON.stringify(peek())}`);
    if (!Number.isFinite(value)) fail('non-finite result');
    return { value };
  } catch (err) {
    if (err instanceof ParseError) return { error: err.message };
    throw err;
  }
}

class ParseError extends Error {}
