/**
 * The host end of fd 3: one JSON object per line. The runner's first line is READY_LINE, written
 * once it waits for its request (before any user code exists). After it, `{"bridge": message}`
 * lines are code-mode calls, answered in order with one line each; any other line is the run's
 * answer (the first one counts). Before them the runner acks its request with STARTED_LINE.
 */
import type { Duplex } from 'node:stream';
import { MAX_MESSAGE_DEPTH, nestedDeeperThan } from '../../core/json-depth.js';
import { RawJson } from '../../core/raw-json.js';
import { sharedScanPool, type ScanPool } from '../../run/scan-pool.js';
import { BRIDGE_ERROR_TYPES, type SandboxBridge } from '../../core/sandbox.js';
import type { CappedCapture } from './capture.js';
import { refuseInexactResult } from '../../core/exact-integers.js';
import { jsonLine, LineReader } from './json-lines.js';
import { BRIDGE_PREFIX, READY_LINE, setupFailureOf, STARTED_LINE, type RunAnswer, type SetupFailure } from './messages.js';

export { READY_LINE, type RunAnswer } from './messages.js';

/**
 * An answer line longer than LARGE_LINE_BYTES, kept as bytes: checked for depth, parsed and
 * decoded in a worker thread (see decodeAnswer in src/run/scan-pool.ts), never on the main thread.
 */
export class RawAnswer {
  /** The line's bytes as the pieces of the chunks they arrived in (see LineReader.pushPieces), in order. */
  constructor(readonly pieces: readonly Buffer[]) {}
}

/** Whether the line of these pieces begins with `prefix` (copying at most its length). */
function startsWith(pieces: readonly Buffer[], prefix: Buffer): boolean {
  const first = pieces[0];
  if (first && first.length >= prefix.length) return first.subarray(0, prefix.length).equals(prefix);
  return Buffer.concat(pieces, prefix.length).equals(prefix);
}

/** Answer lines longer than this are handed on as bytes (RawAnswer). */
export const LARGE_LINE_BYTES = 32 * 1024;

/** Everything a finished run left for the outcome to be made from (pooled, cold or zygote child). */
export interface RunRecord {
  stdout: CappedCapture;
  stderr: CappedCapture;
  answer: RunAnswer | RawAnswer | null;
  overflowed: boolean;
  flooded: boolean;
  timedOut: boolean;
  /** The memory group killed a process of the run; read (by the outcome) only for a run without an answer of its own. */
  oomKilled: boolean;
  /**
   * The runner reported ready (it writes READY_LINE before it reads its request, so before any
   * user code exists). False: the sandbox never started, a platform failure.
   */
  ready: boolean;
  exit: { code: number | null; signal: NodeJS.Signals | null; spawnFailed: boolean; lost?: boolean };
}

export { MAX_MESSAGE_DEPTH, nestedDeeperThan } from '../../core/json-depth.js';

const STARTED_BYTES = Buffer.from(STARTED_LINE);

/** Bridge calls a run may have sent and not yet had answered (threads may share the bridge). */
const MAX_OUTSTANDING_CALLS = 16;

/** Until a run claims the channel, nothing but READY_LINE is expected; anything longer is wrong. */
const UNCLAIMED_LINE_CAP = 4096;

export class RunChannel {
  answer: RunAnswer | RawAnswer | null = null;
  /** A line longer than the cap arrived; the run is stopped. */
  overflowed = false;
  /** The run sent more bridge calls than it waited for; it is stopped. */
  flooded = false;
  private outstanding = 0;
  /** A zygote child's report of the set-up step that failed (before READY_LINE: none of the run existed). */
  setupFailure: SetupFailure | null = null;
  /** Told of setupFailure when it arrives. */
  onSetupFailure: (report: SetupFailure) => void = () => {};
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
  /** Bytes received on the channel, and how many of them up to READY_LINE's end. */
  private received = 0;
  private consumed = 0;
  private readyEnd = 0;
  /** The next line is the first after READY_LINE: the runner's STARTED_LINE. */
  private firstAfterReady = true;
  private closedFlag = false;
  private markReady: (ready: boolean) => void = () => {};
  private replies: Promise<void> = Promise.resolve();
  private readonly lines = new LineReader({
    maxLineBytes: UNCLAIMED_LINE_CAP,
    onOverflow: () => {
      this.overflowed = true;
      this.onOverflow();
    },
  });
  private bridge: SandboxBridge | undefined;
  private onOverflow: () => void = () => {};

  /**
   * Listens from the moment the sandbox is spawned, so nothing it writes is missed while it waits
   * in a pool; `begin` hands it to the run that claims the sandbox.
   */
  constructor(
    private readonly socket: Duplex,
    private readonly log: (message: string) => void,
    /** Where large lines are parsed (worker threads). */
    private readonly decoder: Pick<ScanPool, 'decodeBridge'> = sharedScanPool,
  ) {
    this.ready = new Promise((resolve) => (this.markReady = resolve));
    this.answered = new Promise((resolve) => (this.markAnswered = resolve));
    // The sandbox may be gone before a reply is written; that ends the run, not the server.
    socket.on('error', () => {});
    let markEnded: () => void = () => {};
    this.ended = new Promise((resolve) => (markEnded = resolve));
    socket.on('close', () => {
      this.closedFlag = true;
      this.markReady(false);
      markEnded();
    });
    socket.on('data', (chunk: Buffer) => this.push(chunk));
  }

  /**
   * Anything at all came after READY_LINE (the ack, an answer, a call, part of a line): the runner
   * had read its request. Once the channel has closed, false means the run's code never ran.
   */
  get heardAfterReady(): boolean {
    return this.sawReady && this.received > this.readyEnd;
  }

  /** fd 3 has closed: everything the runner wrote on it has been read. */
  get closed(): boolean {
    return this.closedFlag;
  }

  /**
   * fd 3 closed with nothing after READY_LINE (or no ready line at all): the runner never acked a
   * request, so none of the run's code ran. Only the host's reads decide it (execute.ts, ZygoteChild).
   */
  get closedBeforeStart(): boolean {
    return this.closedFlag && !this.heardAfterReady;
  }

  /** Settles once fd 3 has closed. */
  readonly ended: Promise<void>;

  /** The run's own settings: its bridge, the line cap (result size) and how to stop it on overflow. */
  begin(bridge: SandboxBridge | undefined, lineCapBytes: number, onOverflow: () => void): void {
    this.bridge = bridge;
    this.lines.maxLineBytes = lineCapBytes;
    this.onOverflow = onOverflow;
  }

  private push(chunk: Buffer): void {
    this.received += chunk.length;
    for (const pieces of this.lines.pushPieces(chunk)) {
      const length = pieces.reduce((sum, piece) => sum + piece.length, 0);
      this.consumed += length + 1;
      if (this.sawReady && length > LARGE_LINE_BYTES) {
        // A large line is neither joined, decoded nor parsed here: its pieces go to a worker thread
        // (the whole chunks among them moved, not copied). STARTED_LINE is short, so never this.
        this.firstAfterReady = false;
        if (startsWith(pieces, BRIDGE_PREFIX)) {
          this.largeCall(pieces);
        } else if (this.answer === null) {
          this.answer = new RawAnswer(pieces);
          this.markAnswered();
        }
        continue;
      }
      const bytes = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, length);
      if (this.sawReady && this.firstAfterReady) {
        this.firstAfterReady = false;
        // Written by the runner before any of the run's code exists, so only ever the first line.
        if (bytes.equals(STARTED_BYTES)) continue;
      }
      this.handle(bytes.toString('utf8'));
    }
  }

  private handle(line: string): void {
    if (!this.sawReady && line === READY_LINE) {
      // Only the runner can write it: user code runs after the request, which is read after this line.
      this.sawReady = true;
      this.readyEnd = this.consumed;
      this.markReady(true);
      return;
    }
    let message: unknown;
    if (nestedDeeperThan(line, MAX_MESSAGE_DEPTH)) {
      // Decided here, before anything on the server parses or walks it; it ends the run.
      message = {
        ok: false,
        type: 'SerializationError',
        message: `the function sent a value nested deeper than ${MAX_MESSAGE_DEPTH} levels`,
      };
    } else {
      try {
        message = refuseInexactResult(JSON.parse(line), line);
      } catch {
        message = { ok: false, type: 'ProcessExitError', message: 'the function wrote an unreadable answer' };
      }
    }
    // Before READY_LINE only the platform writes here (no user code exists yet): a set-up report
    // is the reason the sandbox never started, not the run's answer.
    const setupFailure = this.sawReady ? null : setupFailureOf(message);
    if (setupFailure) {
      this.setupFailure ??= setupFailure;
      this.onSetupFailure(setupFailure);
      return;
    }
    if (message !== null && typeof message === 'object' && Object.prototype.hasOwnProperty.call(message, 'bridge')) {
      if (!this.countCall()) return;
      const request = (message as { bridge: unknown }).bridge;
      this.replies = this.replies.then(() => this.reply(request)).finally(() => this.outstanding--);
      return;
    }
    if (this.answer === null) {
      this.answer = message as RunAnswer;
      this.markAnswered();
    }
  }

  /** A large bridge call: parsed in a worker, answered in its turn like any other call. */
  private largeCall(pieces: readonly Buffer[]): void {
    if (!this.countCall()) return;
    this.replies = this.replies
      .then(async () => {
        let decoded: Awaited<ReturnType<ScanPool['decodeBridge']>>;
        try {
          decoded = await this.decoder.decodeBridge(pieces);
        } catch {
          this.write({ ok: false, error_type: BRIDGE_ERROR_TYPES.bridge, error: 'the platform could not read this call' });
          return;
        }
        if ('request' in decoded) return this.reply(decoded.request);
        // Too deep or unreadable: the line is the run's answer, as a small one would be.
        if (this.answer === null) {
          this.answer = decoded.answer;
          this.markAnswered();
        }
      })
      .finally(() => this.outstanding--);
  }

  /**
   * The bridge is call-and-wait; a run that sends calls without reading their answers would only
   * queue work and memory on the server, so past a few outstanding it is stopped.
   */
  private countCall(): boolean {
    if (++this.outstanding <= MAX_OUTSTANDING_CALLS) return true;
    if (!this.flooded) {
      this.flooded = true;
      this.onOverflow();
    }
    return false;
  }

  private write(response: unknown): void {
    if (!this.socket.destroyed) this.socket.write(jsonLine(response));
  }

  private async reply(request: unknown): Promise<void> {
    let response: unknown;
    if (!this.bridge) {
      response = { ok: false, error_type: BRIDGE_ERROR_TYPES.bridge, error: 'this run has no bridge' };
    } else {
      try {
        response = await this.bridge(request);
      } catch (error) {
        this.log(`sandbox bridge failed: ${(error as Error).message}`);
        response = { ok: false, error_type: BRIDGE_ERROR_TYPES.bridge, error: 'the platform could not answer this call' };
      }
    }
    if (this.socket.destroyed) return;
    const result = (response as { ok?: unknown; result?: unknown } | null)?.result;
    if (result instanceof RawJson) {
      // A large result of another function (another sandbox's answer) goes on as the bytes it came as.
      this.socket.write(Buffer.concat([Buffer.from('{"ok":true,"result":'), result.bytes, Buffer.from('}\n')]));
      return;
    }
    this.write(response);
  }
}
