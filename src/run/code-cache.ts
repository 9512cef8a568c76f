/**
 * The code of function versions, loaded when a run needs it rather than kept in every snapshot.
 * Versions are immutable, so a version id is a permanent key; the cache is bounded by bytes and
 * drops the least recently used code first.
 */
import { DomainError } from '../core/errors.js';
import type { ActiveFunction } from '../store/catalog-store.js';

export const CODE_CACHE_BYTES = 64 * 1024 * 1024;

export class CodeCache {
  private readonly entries = new Map<string, string>();
  private bytes = 0;

  constructor(
    private readonly load: (versionIds: readonly string[]) => Promise<Map<string, string>>,
    private readonly maxBytes = CODE_CACHE_BYTES,
  ) {}

  /** The code of one version (from the cache, or one query; `remember: false` for one-off bulk reads). */
  async codeOf(fn: Pick<ActiveFunction, 'versionId' | 'service' | 'name'>, options: { remember?: boolean } = {}): Promise<string> {
    const hit = this.entries.get(fn.versionId);
    if (hit !== undefined) {
      this.entries.delete(fn.versionId);
      this.entries.set(fn.versionId, hit);
      return hit;
    }
    const code = (await this.load([fn.versionId])).get(fn.versionId);
    // The version was deleted with its function after the snapshot was taken.
    if (code === undefined)
      throw new DomainError('not_found', `function '${fn.service}.${fn.name}' was deleted while this call was on its way`);
    if (options.remember !== false) this.remember(fn.versionId, code);
    return code;
  }

  private remember(id: string, code: string): void {
    const size = code.length * 2;
    if (size > this.maxBytes) return;
    // Two calls that missed at once load the same version: count it once.
    if (this.entries.has(id)) return;
    this.entries.set(id, code);
    this.bytes += size;
    for (const [key, value] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(key);
      this.bytes -= value.length * 2;
    }
  }
}
