import { createHash } from 'node:crypto';
import { SecretScanner } from '../core/secret-scanner.js';

/**
 * Scanners per set of env values, least recently used first out. Building one costs time linear
 * in the values' forms (tens of ms for a full 32 KB header), and a client sends the same header
 * call after call, so each distinct set is built once. Bounded by entries and by the code units
 * the matchers hold. Keys are hashes: the map itself holds no value in the clear.
 */
export class SecretScannerCache {
  private readonly entries = new Map<string, SecretScanner>();
  private units = 0;

  constructor(
    private readonly maxEntries = 64,
    private readonly maxUnits = 4 * 1024 * 1024,
  ) {}

  for(values: readonly string[]): SecretScanner {
    if (values.length === 0) return EMPTY;
    const key = createHash('sha256')
      .update(JSON.stringify([...values].sort()))
      .digest('base64');
    const cached = this.entries.get(key);
    if (cached) {
      this.entries.delete(key);
      this.entries.set(key, cached);
      return cached;
    }
    const scanner = new SecretScanner(values);
    this.entries.set(key, scanner);
    this.units += scanner.envUnits;
    for (const [oldest, old] of this.entries) {
      if (this.entries.size <= this.maxEntries && this.units <= this.maxUnits) break;
      if (old === scanner) break;
      this.entries.delete(oldest);
      this.units -= old.envUnits;
    }
    return scanner;
  }
}

const EMPTY = new SecretScanner([]);
