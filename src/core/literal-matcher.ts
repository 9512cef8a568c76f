/**
 * Aho–Corasick over UTF-16 code units: where any of many literal strings occurs in a text, in one
 * pass whose cost does not depend on how the text and the literals overlap (a regex alternation of
 * long literals costs text × literal length on text that keeps almost matching).
 *
 * Written here rather than taken from npm: the packages measured (modern-ahocorasick, ahocorasick,
 * @monyone/aho-corasick) took 1-2 s to compile 60 KB of literals, report every overlapping match
 * (quadratic output for literals that are suffixes of each other), or segment text into graphemes
 * at about 50 µs per non-ASCII character.
 */

/** Most literal code units one matcher holds (its tables take about 18 bytes per unit). */
export const MAX_LITERAL_UNITS = 4 * 1024 * 1024;

export class LiteralMatcher {
  /** Child of the root per code unit (0: none). */
  private readonly rootNext = new Int32Array(0x10000);
  /** Children of node n: labels/targets[edgeStart[n] .. edgeStart[n + 1]), labels ascending. */
  private readonly edgeStart: Int32Array;
  private readonly labels: Uint16Array;
  private readonly targets: Int32Array;
  private readonly fail: Int32Array;
  /** Length of the longest literal that ends at this node (a suffix of its path), 0 if none. */
  private readonly longest: Int32Array;
  /** Length of each node's path: at a cut, how much of a literal's start the text ends with. */
  private readonly depth: Int32Array;
  readonly empty: boolean;

  /** Code units held (one trie node each): what the matcher costs to keep. */
  get units(): number {
    return this.labels.length;
  }

  constructor(literals: Iterable<string>) {
    // Sorted by code unit, each literal shares its common prefix with the one before it, so the
    // trie is built without looking any child up, and each node's children come in label order.
    const sorted = [...new Set([...literals].filter((literal) => literal.length > 0))].sort();
    const units = sorted.reduce((sum, literal) => sum + literal.length, 0);
    if (units > MAX_LITERAL_UNITS) throw new RangeError(`at most ${MAX_LITERAL_UNITS} literal code units`);
    this.empty = sorted.length === 0;
    const nodes = units + 1;
    const parentOf = new Int32Array(nodes);
    const labelOf = new Uint16Array(nodes);
    const depthOf = new Int32Array(nodes);
    this.depth = depthOf;
    const terminal = new Uint8Array(nodes);
    const path = [0];
    let count = 1;
    let previous = '';
    for (const literal of sorted) {
      let common = 0;
      while (common < previous.length && common < literal.length && previous.charCodeAt(common) === literal.charCodeAt(common)) common++;
      path.length = common + 1;
      for (let i = common; i < literal.length; i++) {
        const node = count++;
        parentOf[node] = path[i]!;
        labelOf[node] = literal.charCodeAt(i);
        depthOf[node] = i + 1;
        path.push(node);
      }
      terminal[path[literal.length]!] = 1;
      previous = literal;
    }
    // Children grouped by parent (a stable counting sort keeps their label order).
    this.edgeStart = new Int32Array(count + 1);
    for (let node = 1; node < count; node++) this.edgeStart[parentOf[node]! + 1]!++;
    for (let node = 0; node < count; node++) this.edgeStart[node + 1]! += this.edgeStart[node]!;
    this.labels = new Uint16Array(Math.max(0, count - 1));
    this.targets = new Int32Array(Math.max(0, count - 1));
    const fill = this.edgeStart.slice(0, count);
    for (let node = 1; node < count; node++) {
      const slot = fill[parentOf[node]!]!++;
      this.labels[slot] = labelOf[node]!;
      this.targets[slot] = node;
      if (parentOf[node] === 0) this.rootNext[labelOf[node]!] = node;
    }
    // Failure links breadth first: a node's is found from its parent's, which is shallower.
    this.fail = new Int32Array(count);
    this.longest = new Int32Array(count);
    const queue = new Int32Array(count);
    let head = 0;
    let tail = 0;
    queue[tail++] = 0;
    while (head < tail) {
      const node = queue[head++]!;
      for (let edge = this.edgeStart[node]!; edge < this.edgeStart[node + 1]!; edge++) {
        const child = this.targets[edge]!;
        const label = this.labels[edge]!;
        let target = 0;
        if (node !== 0) {
          let state = this.fail[node]!;
          for (;;) {
            target = this.step(state, label);
            if (target !== 0 || state === 0) break;
            state = this.fail[state]!;
          }
        }
        this.fail[child] = target;
        this.longest[child] = terminal[child] ? depthOf[child]! : this.longest[target]!;
        queue[tail++] = child;
      }
    }
  }

  private step(node: number, unit: number): number {
    if (node === 0) return this.rootNext[unit]!;
    let low = this.edgeStart[node]!;
    let high = this.edgeStart[node + 1]! - 1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const label = this.labels[middle]!;
      if (label === unit) return this.targets[middle]!;
      if (label < unit) low = middle + 1;
      else high = middle - 1;
    }
    return 0;
  }

  /**
   * Where literals occur, as [start, end) pairs (flat: s0, e0, s1, e1 …), ascending; occurrences
   * that overlap are joined into one range (adjacent ones are not). At each of `cuts` (ascending
   * positions where the text was cut short), the longest stretch ending there that is the start of
   * a literal, if at least `minPartial` units, is a range too: what survived of a literal cut there.
   */
  ranges(text: string, cuts: readonly number[] = [], minPartial = 1): number[] {
    const out: number[] = [];
    if (this.empty) return out;
    const { rootNext, edgeStart, labels, targets, fail, longest, depth } = this;
    let state = 0;
    let cut = 0;
    const add = (start: number, end: number) => {
      while (out.length > 0 && out[out.length - 1]! > start) {
        out.pop();
        start = Math.min(start, out.pop()!);
      }
      out.push(start, end);
    };
    for (let i = 0; i <= text.length; i++) {
      // The automaton's state is the longest suffix of text[0, i) that starts some literal.
      while (cut < cuts.length && cuts[cut]! < i) cut++;
      if (cut < cuts.length && cuts[cut] === i && depth[state]! >= minPartial) add(i - depth[state]!, i);
      if (i === text.length) break;
      const unit = text.charCodeAt(i);
      let next = 0;
      while (state !== 0) {
        // A binary search among the node's children (labels ascending).
        let low = edgeStart[state]!;
        let high = edgeStart[state + 1]! - 1;
        while (low <= high) {
          const middle = (low + high) >>> 1;
          const label = labels[middle]!;
          if (label === unit) {
            next = targets[middle]!;
            break;
          }
          if (label < unit) low = middle + 1;
          else high = middle - 1;
        }
        if (next !== 0) break;
        state = fail[state]!;
      }
      state = next !== 0 ? next : rootNext[unit]!;
      const length = longest[state]!;
      if (length === 0) continue;
      // The longest literal ending here contains every shorter one that does.
      add(i + 1 - length, i + 1);
    }
    return out;
  }
}
