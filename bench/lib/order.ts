/**
 * A round's order for the benches that interleave series. What a call costs depends on the call
 * before it: a sandboxed run leaves work behind it (its sandbox's teardown, the next one's start,
 * its record), which lands on whatever comes next on a 2-core host. In a fixed order each series
 * always followed the same one (the peers followed each other, `_env_status` always came after
 * the pandas run); shuffled each round, every series follows every other alike.
 */

/** mulberry32: a small seeded generator, so a run's orders can be had again from its seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A Fisher–Yates shuffle of a copy of `items`. */
export function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
