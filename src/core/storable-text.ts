/**
 * What PostgreSQL's text and json columns cannot hold: a NUL (text cannot), and a lone UTF-16
 * surrogate (it has no UTF-8 form; jsonb refuses its `\ud800` escape). Input from a client is
 * refused with these (a typed error, before anything is written); text the platform records for a
 * run (a user's error message, a model's answer) is stored with U+FFFD in their place.
 */

// ES2024's String methods, in Node 20's V8 but not in this project's ES2022 lib.
declare global {
  interface String {
    isWellFormed(): boolean;
    toWellFormed(): string;
  }
}

export type UnstorableReason = 'nul' | 'lone_surrogate';

const REASON_TEXT: Record<UnstorableReason, string> = {
  nul: 'strings must not contain NUL characters',
  lone_surrogate: 'strings must be well-formed Unicode (no lone surrogates)',
};

function reasonOf(text: string): UnstorableReason | undefined {
  if (text.includes('\u0000')) return 'nul';
  return text.isWellFormed() ? undefined : 'lone_surrogate';
}

/**
 * The first reason any string (or object key) in `value` cannot be stored. Iterative, so a value
 * nested deeper than the stack gets its typed error later instead of a RangeError.
 */
export function unstorableReason(value: unknown): UnstorableReason | undefined {
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const current = pending.pop();
    if (typeof current === 'string') {
      const reason = reasonOf(current);
      if (reason) return reason;
    } else if (Array.isArray(current)) {
      for (const item of current) pending.push(item);
    } else if (current !== null && typeof current === 'object') {
      for (const [key, item] of Object.entries(current)) {
        const reason = reasonOf(key);
        if (reason) return reason;
        pending.push(item);
      }
    }
  }
  return undefined;
}

/** The sentence a refusal gives for `reason`. */
export function unstorableMessage(reason: UnstorableReason): string {
  return REASON_TEXT[reason];
}

/** `text` with each NUL and lone surrogate replaced by U+FFFD (a record must not be lost to one). */
export function storableText(text: string): string {
  const clean = text.includes('\u0000') ? text.replace(/\u0000/g, '\uFFFD') : text;
  return clean.isWellFormed() ? clean : clean.toWellFormed();
}

/** JSON text of `value` for a json/jsonb column, its strings made storable (see storableText). */
export function storableJson(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) => (typeof item === 'string' ? storableText(item) : item));
}

/** Whether a client's date fits the database's timestamps (years 1-9999: ISO 8601's four digits). */
export function storableDate(date: Date): boolean {
  const year = date.getUTCFullYear();
  return !Number.isNaN(date.getTime()) && year >= 1 && year <= 9999;
}
