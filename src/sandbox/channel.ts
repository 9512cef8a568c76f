/**
 * The host end of fd 3: one JSON object per line. `{"bridge": message}` lines are code-mode calls,
 * answered in order with one line each; any other line is the run's answer (the first one counts).
 */
import type { Duplex } from 'node:stream';
import type { SandboxBridge } from '../core/sandbox.js';

export interface RunAnswer {
  ok: boolean;
  result?: unknown;
  type?: string;
  message?: string;
  traceback?: string;
}

export class RunChannel {
  answer: RunAnswer | null = null;
  /** A line longer than the cap arrived; the run is stopped. */
  overflowed = false;
  private readonly pending: Buffer[] = [];
  private pendingBytes = 0;
  private replies: Promise<void> = Promise.resolve();

  constructor(
    private readonly socket: Duplex,
    private readonly lineCapBytes: number,
    private readonly bridge: SandboxBridge | undefined,
    private readonly onOverflow: () => void,
    private readonly log: (message: string) => void,
  ) {
    // The sandbox may be gone before a reply is written; that ends the run, not the server.
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => this.push(chunk));
  }

  private push(chunk: Buffer): void {
    if (this.overflowed) return;
    let start = 0;
    for (let newline = chunk.indexOf(10); newline !== -1; newline = chunk.indexOf(10, start)) {
      this.pending.push(chunk.subarray(start, newline));
      const line = Buffer.concat(this.pending).toString('utf8');
      this.pending.length = 0;
      this.pendingBytes = 0;
      this.handle(line);
      start = newline + 1;
    }
    if (start < chunk.length) {
      this.pending.push(chunk.subarray(start));
      this.pendingBytes += chunk.length - start;
      if (this.pendingBytes > this.lineCapBytes) {
        this.overflowed = true;
        this.pending.length = 0;
        this.onOverflow();
      }
    }
  }

  private handle(line: string): void {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      message = { ok: false, type: 'ProcessExitError', message: 'the function wrote an unreadable answer' };
    }
    if (message !== null && typeof message === 'object' && Object.prototype.hasOwnProperty.call(message, 'bridge')) {
      const request = (message as { bridge: unknown }).bridge;
      this.replies = this.replies.then(() => this.reply(request));
      return;
    }
    if (this.answer === null) this.answer = message as RunAnswer;
  }

  private async reply(request: unknown): Promise<void> {
    let response: unknown;
    if (!this.bridge) {
      response = { ok: false, error_type: 'BridgeError', error: 'this run has no bridge' };
    } else {
      try {
        response = await this.bridge(request);
      } catch (error) {
        this.log(`sandbox bridge failed: ${(error as Error).message}`);
        response = { ok: false, error_type: 'BridgeError', error: 'the platform could not answer this call' };
      }
    }
    if (!this.socket.destroyed) this.socket.write(`${JSON.stringify(response ?? null)}\n`);
  }
}
