/**
 * Where a process's resident memory goes, from /proc/PID/smaps, by kind of mapping: WebAssembly
 * memories (PGlite's PostgreSQL, the largest), files (the node binary, shared libraries, mapped
 * data), and other anonymous memory (V8's JS heaps, the native heap, thread stacks). V8 reserves
 * 8 GiB of address space for each wasm32 memory (bounds checks by guard pages): the memory's pages
 * are one read-write anonymous mapping directly followed by the reservation's inaccessible rest,
 * the two together at least 4 GiB, which nothing else in a Node process maps (Node runs without
 * pointer compression).
 */

const WASM_RESERVATION_BYTES = 4n * 1024n * 1024n * 1024n;

export interface MemoryBreakdown {
  /** RSS in each kind, MB. */
  wasmMb: number;
  filesMb: number;
  anonymousMb: number;
  /** How many wasm memories are mapped. */
  wasmMemories: number;
  /** Each wasm memory's RSS, MB, in address order. */
  wasmMemoryMb: number[];
}

interface Mapping {
  start: bigint;
  end: bigint;
  perms: string;
  anonymous: boolean;
  rssKb: number;
}

/** Parses the text of /proc/PID/smaps. */
export function breakdown(smaps: string): MemoryBreakdown {
  const mappings: Mapping[] = [];
  for (const line of smaps.split('\n')) {
    // A mapping's header: "start-end perms offset dev inode [path]"; its fields follow as "Name: value kB".
    const header = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (header) {
      const anonymous = Number(header[4]) === 0 && !header[5]!.startsWith('/');
      mappings.push({ start: BigInt(`0x${header[1]}`), end: BigInt(`0x${header[2]}`), perms: header[3]!, anonymous, rssKb: 0 });
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss && mappings.length > 0) mappings[mappings.length - 1]!.rssKb += Number(rss[1]);
  }
  const result = { wasmKb: 0, filesKb: 0, anonymousKb: 0, wasmMemories: 0, wasmMemoryMb: [] as number[] };
  mappings.forEach((mapping, i) => {
    const next = mappings[i + 1];
    const wasm =
      mapping.anonymous &&
      mapping.perms.startsWith('rw') &&
      next !== undefined &&
      next.anonymous &&
      next.start === mapping.end &&
      next.perms.startsWith('---') &&
      next.end - mapping.start >= WASM_RESERVATION_BYTES;
    if (wasm) {
      result.wasmKb += mapping.rssKb;
      result.wasmMemories++;
      result.wasmMemoryMb.push(mapping.rssKb / 1024);
    } else if (mapping.anonymous) result.anonymousKb += mapping.rssKb;
    else result.filesKb += mapping.rssKb;
  });
  return {
    wasmMb: result.wasmKb / 1024,
    filesMb: result.filesKb / 1024,
    anonymousMb: result.anonymousKb / 1024,
    wasmMemories: result.wasmMemories,
    wasmMemoryMb: result.wasmMemoryMb,
  };
}
