/**
 * A scan worker thread (see scan-pool.ts). Two jobs, both for answers too large for the main thread:
 * - decode: a run's answer line (bytes) is checked for depth and parsed; a result comes back as the
 *   bytes of its JSON, an error as its type, message and traceback.
 * - render: a run's result (bytes, or small enough to come as JSON text) and its logs are scanned
 *   for secrets, and the MCP tool result is rendered: what comes back is the redacted record
 *   fields and the tool result's texts as JSON bytes, never a parsed value.
 * Buffers travel as transferred ArrayBuffers, not copies. Runs at a lower priority than the
 * server's main thread, so working on large answers cannot starve it.
 */
import { writeFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { parentPort } from 'node:worker_threads';
import { findingTypes, type Finding } from '../core/secret-scanner.js';
import { renderToolResult } from '../core/tool-render.js';
import { MAX_MESSAGE_DEPTH, nestedDeeperThan } from '../core/json-depth.js';
import { SecretScannerCache } from './scanner-cache.js';
import { refuseInexactResult } from '../core/exact-integers.js';
import { callInputProblem } from '../core/call-input.js';
import { STATE_ARGS_MAX_BYTES } from '../core/agent-state-access.js';
import { recordedResult, recordedTexts } from '../core/recorded-text.js';
import { answerText } from '../core/sandbox.js';

/** The record fields of a run's answer (RunResult without its result). */
export interface RunFields {
  ok: boolean;
  error?: string;
  error_type?: string;
  stdout: string;
  stderr: string;
  missing?: string[];
}

export type ScanJob =
  | { id: number; op: 'decode'; line: ArrayBuffer[] }
  | { id: number; op: 'bridge'; line: ArrayBuffer[] }
  | {
      id: number;
      op: 'render';
      env: readonly string[];
      fields: RunFields;
      resultText?: string;
      resultBytes?: ArrayBuffer;
      objectOutputSchema: boolean;
      codeMode: boolean;
    };

/** What a decoded answer line holds: as sandbox/wire/channel.ts and interpret in sandbox/outcome.ts read a parsed line. */
export type DecodedAnswer =
  { kind: 'result'; result: ArrayBuffer } | { kind: 'failure'; type: string; message: string; traceback: string } | { kind: 'other' };

/**
 * A bridge call's line: what the bridge reads of its request (op, service and function when they
 * are strings; the input as the bytes of its JSON), or, for a line that cannot be a call (too
 * deep, unreadable), the failure it stands for as the run's answer (as RunChannel.handle has it).
 */
export type DecodedBridge =
  | {
      kind: 'call';
      op?: string;
      service?: string;
      function?: string;
      input?: ArrayBuffer;
      result?: ArrayBuffer;
      inputProblem?: string;
      /** A state request's small arguments (key, if_version, prefix, cursor, limit): an object of at most STATE_ARGS_MAX_BYTES. */
      args?: Record<string, unknown>;
    }
  | { kind: 'answer'; type: string; message: string };

export type ScanReply =
  | { id: number; decoded: DecodedAnswer }
  | { id: number; bridge: DecodedBridge }
  | {
      id: number;
      types: string[];
      bytes: number;
      fields: RunFields;
      isError: boolean;
      texts: ArrayBuffer[];
      structured?: ArrayBuffer;
      /** The result as history keeps it (core/recorded-text.ts); absent for a failed run. */
      recorded?: string;
    }
  | { id: number; failed: true };

/** How much nicer than the thread that started it (the server's main thread) a scan thread runs. */
const SCAN_THREAD_NICER = 10;
try {
  // On Linux the nice value is per thread: this lowers this worker only, not the server. Relative
  // to the nice it was started with (its starter's): at an absolute 10, a server started at nice 5
  // had its scans only 5 steps below its event loop, and one started at 10 or more level with it.
  setPriority(Math.min(19, getPriority() + SCAN_THREAD_NICER));
} catch {
  // Not permitted here: the worker still runs off the main thread.
}
try {
  // A name of its own in `top -H` and /proc/PID/task/*/comm (Node names every thread `node`): what
  // takes the cores is then seen per thread (bench/abuse --threads).
  writeFileSync('/proc/thread-self/comm', 'mcpw-scan');
} catch {
  // Not Linux: the name only helps an operator's tools.
}

// Each worker keeps its own scanners (half of what one cache on the main thread held).
const scanners = new SecretScannerCache(32, 2 * 1024 * 1024);

/** An ArrayBuffer holding exactly `text`'s UTF-8 bytes (transferred, so not from Buffer's shared pool). */
function bytesOf(text: string): ArrayBuffer {
  const out = new Uint8Array(Buffer.byteLength(text));
  Buffer.from(out.buffer).write(text);
  return out.buffer;
}

/** A line checked and parsed by the same rules as one handled on the main thread (RunChannel.handle). */
function parseLine(line: ArrayBuffer[]): { message: unknown; text: string } | { type: string; message: string } {
  // The pieces the line arrived in, joined here rather than on the server's main thread.
  const text = (line.length === 1 ? Buffer.from(line[0]!) : Buffer.concat(line.map((piece) => Buffer.from(piece)))).toString('utf8');
  if (nestedDeeperThan(text, MAX_MESSAGE_DEPTH))
    return { type: 'SerializationError', message: `the function sent a value nested deeper than ${MAX_MESSAGE_DEPTH} levels` };
  try {
    return { message: JSON.parse(text), text };
  } catch {
    return { type: 'ProcessExitError', message: 'the function wrote an unreadable answer' };
  }
}

function decode(line: ArrayBuffer[]): { reply: DecodedAnswer; transfer: ArrayBuffer[] } {
  const parsed = parseLine(line);
  if ('type' in parsed) return { reply: { kind: 'failure', type: parsed.type, message: parsed.message, traceback: '' }, transfer: [] };
  // The same rule as a small answer read on the main thread (sandbox/wire/channel.ts): no integer changes silently.
  const message = refuseInexactResult(parsed.message, parsed.text);
  if (message === null || typeof message !== 'object') return { reply: { kind: 'other' }, transfer: [] };
  const answer = message as { ok?: unknown; result?: unknown; type?: unknown; message?: unknown; traceback?: unknown };
  if (answer.ok === true) {
    const result = bytesOf(JSON.stringify(answer.result ?? null));
    return { reply: { kind: 'result', result }, transfer: [result] };
  }
  return {
    reply: {
      kind: 'failure',
      type: answerText(answer.type, 'Error'),
      message: answerText(answer.message, ''),
      traceback: answerText(answer.traceback, ''),
    },
    transfer: [],
  };
}

function bridge(line: ArrayBuffer[]): { reply: DecodedBridge; transfer: ArrayBuffer[] } {
  const parsed = parseLine(line);
  if ('type' in parsed) return { reply: { kind: 'answer', type: parsed.type, message: parsed.message }, transfer: [] };
  // The line began with {"bridge": (RunChannel sends no other here), so it is an object with that key.
  const request = (parsed.message as { bridge?: unknown }).bridge;
  if (request === null || typeof request !== 'object') return { reply: { kind: 'call' }, transfer: [] };
  const { op, service, function: name, input, result, args } = request as Record<string, unknown>;
  const text = (value: unknown) => (typeof value === 'string' ? value : undefined);
  const bytes = input === undefined ? undefined : bytesOf(JSON.stringify(input));
  // A same-language call's result, sent back for its output_schema check (op "result").
  const resultBytes = result === undefined ? undefined : bytesOf(JSON.stringify(result));
  const call: DecodedBridge = { kind: 'call' };
  if (text(op) !== undefined) call.op = text(op)!;
  if (text(service) !== undefined) call.service = text(service)!;
  if (text(name) !== undefined) call.function = text(name)!;
  if (bytes) call.input = bytes;
  if (resultBytes) call.result = resultBytes;
  // The value of a state `set` travels as `input`; its other arguments are small, else left out (the host refuses the request).
  if (args !== null && typeof args === 'object' && !Array.isArray(args) && JSON.stringify(args).length <= STATE_ARGS_MAX_BYTES)
    call.args = args as Record<string, unknown>;
  // The endpoint's input rules (depth, size, inexact integers), decided here on the parsed value:
  // the main thread only sees the input's bytes.
  const problem = input === undefined ? undefined : callInputProblem(input);
  if (problem) call.inputProblem = problem;
  const transfer = [bytes, resultBytes].filter((b): b is ArrayBuffer => b !== undefined);
  return { reply: call, transfer };
}

/**
 * Buffer.byteLength(JSON.stringify(scanned)), without a second JSON of a large result: a successful
 * answer's first text is its result's JSON (core/tool-render.ts), and `result` is its last key.
 */
function answerBytes(scanned: RunFields & { result?: unknown }, resultJson: string | undefined): number {
  const { result, ...fields } = scanned;
  const keys = Object.keys(scanned);
  if (!scanned.ok || result === undefined || resultJson === undefined || keys[keys.length - 1] !== 'result')
    return Buffer.byteLength(JSON.stringify(scanned));
  const head = JSON.stringify(fields);
  // {…fields,"result":…}: the fields' JSON without its closing brace, the key, the result, the brace.
  return Buffer.byteLength(head) - 1 + (head === '{}' ? 0 : 1) + Buffer.byteLength('"result":') + Buffer.byteLength(resultJson) + 1;
}

function render(job: Extract<ScanJob, { op: 'render' }>): {
  reply: Omit<Extract<ScanReply, { texts: ArrayBuffer[] }>, 'id'>;
  transfer: ArrayBuffer[];
} {
  const { fields } = job;
  const result =
    job.resultBytes !== undefined
      ? JSON.parse(Buffer.from(job.resultBytes).toString('utf8'))
      : job.resultText !== undefined
        ? JSON.parse(job.resultText)
        : undefined;
  const run: Record<string, unknown> = { ...fields };
  if (fields.ok) run.result = result;
  const findings: Finding[] = [];
  const scanned = scanners.for(job.env).scanValue(run, findings) as RunFields & { result?: unknown };
  const rendered = renderToolResult(scanned, job.objectOutputSchema, job.codeMode);
  const bytes = answerBytes(scanned, rendered.isError ? undefined : rendered.texts[0]);
  const texts = rendered.texts.map((text) => bytesOf(JSON.stringify(text)));
  const structuredJson = rendered.structured ? JSON.stringify(rendered.structured) : undefined;
  const structured = structuredJson !== undefined ? bytesOf(structuredJson) : undefined;
  // What the run's history keeps of it, from the same texts (run-service.ts recordableResult).
  const recorded = scanned.ok ? (structuredJson !== undefined ? recordedResult(structuredJson) : recordedTexts(rendered.texts)) : undefined;
  const { result: _result, ...redacted } = scanned;
  return {
    reply: {
      types: findingTypes(findings),
      bytes,
      fields: redacted,
      isError: rendered.isError,
      texts,
      ...(structured ? { structured } : {}),
      ...(recorded !== undefined ? { recorded } : {}),
    },
    transfer: structured ? [...texts, structured] : texts,
  };
}

parentPort!.on('message', (job: ScanJob) => {
  let reply: ScanReply;
  let transfer: ArrayBuffer[] = [];
  try {
    if (job.op === 'bridge') {
      const decoded = bridge(job.line);
      reply = { id: job.id, bridge: decoded.reply };
      transfer = decoded.transfer;
    } else if (job.op === 'decode') {
      const decoded = decode(job.line);
      reply = { id: job.id, decoded: decoded.reply };
      transfer = decoded.transfer;
    } else {
      const rendered = render(job);
      reply = { id: job.id, ...rendered.reply };
      transfer = rendered.transfer;
    }
  } catch {
    reply = { id: job.id, failed: true };
  }
  parentPort!.postMessage(reply, transfer);
});
