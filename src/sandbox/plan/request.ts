/** A request's checks and the bytes its runner is sent. Pure. */
import { randomUUID } from 'node:crypto';
import { invalid } from '../../core/errors.js';
import { RawJson } from '../../core/raw-json.js';
import type { SandboxLimits, SandboxRequest } from '../../core/sandbox.js';
import { helperDeadlineMs } from './shape.js';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MOUNT_TARGET = /^\/opt(\/[A-Za-z0-9._@+-]+)+$/;

/**
 * Env names and values a process can be given; mounts under /opt only, from absolute host paths
 * (nothing may shadow the sandbox's own layout); absolute library paths. Throws a DomainError.
 */
export function checkRequest(request: SandboxRequest): void {
  for (const [name, value] of Object.entries(request.env ?? {})) {
    if (!ENV_NAME.test(name) || value.includes('\0')) throw invalid(`env variable name '${name.slice(0, 64)}' or its value is not allowed`);
  }
  for (const mount of request.mounts ?? []) {
    const target = mount.target;
    if (!mount.source.startsWith('/') || !MOUNT_TARGET.test(target) || target.split('/').some((part) => part === '..' || part === '.')) {
      throw invalid(`sandbox mount target '${target.slice(0, 200)}' must be a plain path under /opt, from an absolute host path`);
    }
  }
  for (const path of request.libraryPaths ?? []) {
    if (!path.startsWith('/') || path.split('/').includes('..'))
      throw invalid(`library path '${path.slice(0, 200)}' must be an absolute sandbox path`);
  }
}

/** Stands for a RawJson input in a request's JSON until its bytes replace it (random: no code holds it). */
const RAW_INPUT_MARK = `mcpworks-raw-input-${randomUUID()}`;

/** The request line the runner reads (runner.py, runner.cjs): `code` is what runs (TypeScript already transpiled). */
export function requestPayload(request: SandboxRequest, code: string): string {
  // A large input (a bridge call's, still as bytes) goes into the request as those bytes.
  const rawInput = request.input instanceof RawJson ? request.input : undefined;
  const payload = JSON.stringify({
    code,
    input: rawInput ? RAW_INPUT_MARK : (request.input ?? null),
    env: request.env ?? {},
    maxResultBytes: request.limits.maxResultBytes,
    entry: request.entry ?? 'main',
    libraryPaths: request.libraryPaths ?? [],
    bridge: request.bridge !== undefined,
  });
  return rawInput ? payload.replace(JSON.stringify(RAW_INPUT_MARK), () => rawInput.bytes.toString('utf8')) : payload;
}

/** A zygote child's first line: its own CPU limit and wall clock (it ends the run at it, whatever the server does). */
export function zygoteRunLine(limits: SandboxLimits): string {
  return JSON.stringify({ cpuSeconds: Math.floor(limits.cpuSeconds), wallMs: helperDeadlineMs(limits) });
}
