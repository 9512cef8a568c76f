/**
 * The host end of fd 3: one JSON object per line. The runner's first line is READY_LINE, written
 * once it waits for its request (before any user code exists). After it, `{"bridge": message}`
 * lines are code-mode calls, answered in order with one line each; any other line is the run's
 * answer (the first one counts).
 */
import type { Duplex } from 'node:stream';
import type { SandboxBridge } from '../core/sandbox.js';
import type { CappedCapture } from './capture.js';
import { refuseInexactResult } from './exact-integers.js';

export interface RunAnswer {
  ok: boolean;
  result?: unknown;
  type?: string;
  message?: string;
  traceback?: string;
}

/** Everything a finished run left for the outcome to be made from (pooled, cold or zygote child). */
export interface RunRecord {
  stdout: CappedCapture;
  stderr: CappedCapture;
  answer: RunAnswer | null;
  overflowed: boolean;
  flooded: boolean;
  timedOut: boolean;
  oomKilled: boolean;
  /**
   * The runner reported ready (it writes READY_LINE before it reads its request, so before any
   * user code exists). False: the sandbox never started, a platform failure.
   */
  ready: boolean;
  exit: { code: number | null; signal: NodeJS.Signals | null; spawnFailed: boolean; lost?: boolean };
}

/** What the runner writes on fd 3 when it is started and blocked reading its request. */
export const READY_LINE = '{"ready":true}';

/**
 * Deepest nesting of arrays and objects in one message (answer or bridge call). Python's encoder
 * stops near 1,000 levels anyway; Node's does not, and a deeper value would overflow the
 * recursion of whatever handles it next on the server (serialisers, the MCP layer).
 */
export const MAX_MESSAGE_DEPTH = 1000;

/** True when `text` (JSON) nests arrays and objects deeper than `max`: one pass, strings skipped. */
export function nestedDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === 0x22) {
      // Skip the string: to the next quote that no backslash escapes.
      for (i++; i < text.length; i++) {
        const inner = text.charCodeAt(i);
        if (inner === 0x5c) i++;
        else if (inner === 0x22) break;
      }
    } else if (code === 0x5b || code === 0x7b) {
      if (++depth > max) return true;
    } else if (code === 0x5d || code === 0x7d) {
      depth--;
    }
  }
  return false;
}

/** Bridge calls a run may have sent and not yet had answered (threads may share the bridge). */
const MAX_OUTSTANDING_CALLS = 16;

/** Until a run claims the channel, nothing but READY_LINE is expected; anything longer is wrong. */
const UNCLAIMED_LINE_CAP = 4096;

export class RunChannel {
  answer: RunAnswer | null = null;
  /** A line longer than the cap arrived; the run is stopped. */
  overflowed = false;
  /** The run sent more bridge calls than it waited for; it is stopped. */
  flooded = false;
  private outstanding = 0;
  /** The runner's READY_LINE has arrived. */
  get isReady(): boolean {
    return this.sawReady;
  }

  /** True once the runner waits for its request; false if fd 3 closed first (the sandbox died). */
  readonly ready: Promise<boolean>;
  /** Settles when the run's answer has arrived (never, if it does not). */
  readonly answered: Promise<void>;
  private markAnswered: () => void = () => {};
  private sawReady = false;
  private markReady: (ready: boolean) => void = () => {};
  private readonly pending: Buffer[] = [];
  private pendingBytes = 0;
  private replies: Promise<void> = Promise.resolve();
  private lineCapBytes = UNCLAIMED_LINE_CAP;
  private bridge: SandboxBridge | undefined;
  private onOverflow: () => void = () => {};

  /**
   * Listens from the moment the sandbox is spawned, so nothing it writes is missed while it waits
   * in a pool; `begin` hands it to the run that claims the sandbox.
   */
  constructor(
    private readonly socket: Duplex,
    private readonly log: (message: string) => void,
  ) {
    this.ready = new Promise((resolve) => (this.markReady = resolve));
    this.answered = new Promise((resolve) => (this.markAnswered = resolve));
    // The sandbox may be gone before a reply is written; that ends the run, not the server.
    socket.on('error', () => {});
    socket.on('close', () => this.markReady(false));
    socket.on('data', (chunk: Buffer) => this.push(chunk));
  }

  /** The run's own settings: its bridge, the line cap (result size) and how to stop it on overflow. */
  begin(bridge: SandboxBridge | undefined, lineCapBytes: number, onOverflow: () => void): void {
    this.bridge = bridge;
    this.lineCapBytes = lineCapBytes;
    this.onOverflow = onOverflow;
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
    if (!this.sawReady && line === READY_LINE) {
      // Only the runner can write it: user code runs after the request, which is read after this line.
      this.sawReady = true;
      this.markReady(true);
      return;
    }
    let message: unknown;
    if (nestedDeeperThan(line, MAX_MESSAGE_DEPTH)) {
      // Decided here, before anything on the server parses or walks it; it ends the run.
      message = { ok: false, type: 'SerializationError', message: `the function sent a value nested deeper than ${MAX_MESSAGE_DEPTH} levels` };
    } else {
      try {
        message = refuseInexactResult(JSON.parse(line), line);
      } catch {
        message = { ok: false, type: 'ProcessExitError', message: 'the function wrote an unreadable answer' };
      }
    }
    if (message !== null && typeof message === 'object' && Object.prototype.hasOwnProperty.call(message, 'bridge')) {
      // The bridge is call-and-wait; a run that sends calls without reading their answers would
      // only queue work and memory on the server, so past a few outstanding it is stopped.
      if (++this.outstanding > MAX_OUTSTANDING_CALLS) {
        if (!this.flooded) {
          this.flooded = true;
          this.onOverflow();
        }
        return;
      }
      const request = (message as { bridge: unknown }).bridge;
      this.replies = this.replies.then(() => this.reply(request)).finally(() => this.outstanding--);
      return;
    }
    if (this.answer === null) {
      this.answer = message as RunAnswer;
      this.markAnswered();
    }
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
