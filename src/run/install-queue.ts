/**
 * Admission for npm installs on this server: at most `concurrency` at once, at most
 * `accountConcurrency` of them for one account. Others wait in a bounded queue (at most `queue`
 * in all, `accountQueue` per account) for at most `maxWaitMs`; beyond the bound a caller is
 * refused at once. The limit protects this process's memory, so it is kept in this process.
 */
import { DomainError } from '../core/errors.js';

export interface InstallQueueLimits {
  concurrency: number;
  accountConcurrency: number;
  queue: number;
  accountQueue: number;
  maxWaitMs: number;
}

interface Waiter {
  account: string;
  start: () => void;
  timer: NodeJS.Timeout;
}

export class InstallQueue {
  private running = 0;
  private readonly runningBy = new Map<string, number>();
  private readonly waiting: Waiter[] = [];

  constructor(readonly limits: InstallQueueLimits) {}

  /** Runs `task` once admitted; throws rate_limited when the queue is full or the wait runs out. */
  async run<T>(account: string, task: () => Promise<T>): Promise<T> {
    if (!this.canStart(account)) await this.enqueue(account);
    else this.take(account);
    try {
      return await task();
    } finally {
      this.release(account);
    }
  }

  private canStart(account: string): boolean {
    return this.running < this.limits.concurrency && (this.runningBy.get(account) ?? 0) < this.limits.accountConcurrency;
  }

  private take(account: string): void {
    this.running++;
    this.runningBy.set(account, (this.runningBy.get(account) ?? 0) + 1);
  }

  private enqueue(account: string): Promise<void> {
    const mine = this.waiting.filter((w) => w.account === account).length;
    if (mine >= this.limits.accountQueue || this.waiting.length >= this.limits.queue) {
      throw new DomainError(
        'rate_limited',
        mine >= this.limits.accountQueue
          ? `too many npm installs for this account at once (${this.runningBy.get(account) ?? 0} running, ${mine} waiting); try again when they finish`
          : `the server is busy with npm installs (${this.running} running, ${this.waiting.length} waiting); try again shortly`,
        { field: 'requirements', limit: 'npm_install_queue' },
      );
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        account,
        start: () => {
          clearTimeout(waiter.timer);
          this.take(account);
          resolve();
        },
        timer: setTimeout(() => {
          this.waiting.splice(this.waiting.indexOf(waiter), 1);
          reject(
            new DomainError(
              'rate_limited',
              `waited ${Math.round(this.limits.maxWaitMs / 1000)} s for an npm install slot; try again shortly`,
              {
                field: 'requirements',
                limit: 'npm_install_wait',
              },
            ),
          );
        }, this.limits.maxWaitMs),
      };
      this.waiting.push(waiter);
    });
  }

  /** Frees a slot and starts the earliest waiters that fit (an account at its cap does not hold up others). */
  private release(account: string): void {
    this.running--;
    const left = (this.runningBy.get(account) ?? 1) - 1;
    if (left === 0) this.runningBy.delete(account);
    else this.runningBy.set(account, left);
    for (let i = 0; i < this.waiting.length && this.running < this.limits.concurrency;) {
      const waiter = this.waiting[i];
      if (!this.canStart(waiter.account)) {
        i++;
        continue;
      }
      this.waiting.splice(i, 1);
      waiter.start();
    }
  }
}
