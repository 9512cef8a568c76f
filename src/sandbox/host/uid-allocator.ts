/**
 * Hands out uids in turn, skipping those in use, so a uid comes back only after every other one
 * (no kernel object a finished run left, if any, meets the next run). With every one in use, the
 * next in turn is shared.
 */
export class UidAllocator {
  private next = 0;
  private readonly inUse = new Map<number, number>();

  constructor(private readonly range: { first: number; count: number }) {}

  take(): number {
    let uid = this.range.first + (this.next % this.range.count);
    for (let tried = 0; tried < this.range.count && this.inUse.has(uid); tried++) {
      this.next++;
      uid = this.range.first + (this.next % this.range.count);
    }
    this.next++;
    this.inUse.set(uid, (this.inUse.get(uid) ?? 0) + 1);
    return uid;
  }

  release(uid: number): void {
    const count = (this.inUse.get(uid) ?? 1) - 1;
    if (count > 0) this.inUse.set(uid, count);
    else this.inUse.delete(uid);
  }
}
