/**
 * "Did you mean" for unknown names: the available names, and the nearest ones by edit distance
 * (hyphens and underscores count as the same, as code mode makes them).
 */

/** Levenshtein distance with an early exit once every cell of a row exceeds `max`. */
function distance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      best = Math.min(best, current[j]!);
    }
    if (best > max) return max + 1;
    previous = current;
  }
  return previous[b.length]!;
}

const normal = (name: string) => name.toLowerCase().replace(/-/g, '_');

/** Up to `limit` names nearest to `wanted`: within a third of its length in edits, or sharing a word. */
export function nearestNames(wanted: string, names: readonly string[], limit = 3): string[] {
  const target = normal(wanted);
  const words = new Set(target.split('_').filter((w) => w.length >= 3));
  const max = Math.max(1, Math.floor(target.length / 3));
  const scored: Array<{ name: string; score: number }> = [];
  for (const name of names) {
    const candidate = normal(name);
    const edits = distance(target, candidate, max);
    const shared = candidate.split('_').some((w) => words.has(w));
    if (edits <= max) scored.push({ name, score: edits });
    else if (shared || (target.length >= 4 && (candidate.includes(target) || target.includes(candidate))))
      scored.push({ name, score: max + 1 });
  }
  return scored
    .sort((x, y) => x.score - y.score || x.name.localeCompare(y.name))
    .slice(0, limit)
    .map((s) => s.name);
}

/** How many available names an error lists at most. */
export const LISTED_NAMES = 50;

/** The tail of a not-found message: "did you mean …? Available …: …", and the same as details. */
export function suggestion(
  wanted: string,
  names: readonly string[],
  what: string,
): { text: string; details: { available: string[]; did_you_mean: string[] } } {
  const nearest = nearestNames(wanted, names);
  const listed = [...names].sort().slice(0, LISTED_NAMES);
  const more = names.length > listed.length ? `, … (${names.length} in all)` : '';
  const mean = nearest.length > 0 ? ` Did you mean ${nearest.map((n) => `'${n}'`).join(' or ')}?` : '';
  const available = names.length > 0 ? ` Available ${what}: ${listed.join(', ')}${more}.` : ` There are no ${what} yet.`;
  return { text: `${mean}${available}`, details: { available: listed, did_you_mean: nearest } };
}
