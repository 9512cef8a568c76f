/**
 * Create-time syntax check of a function's code, so that code that cannot parse is refused when it
 * is stored rather than when it first runs. Python is compiled (never executed) by a host
 * `python3 -I -S` child that only calls compile() under CPU, memory and time limits; TypeScript is
 * transformed by esbuild, as it is before every run.
 */
import { spawn } from 'node:child_process';
import { DomainError } from '../core/errors.js';
import type { FunctionDefinition } from '../core/functions.js';
import { transpileTypescript } from '../sandbox/transpile.js';

const PYTHON = '/usr/bin/python3';
/** Compiling 1 MB of Python takes well under a second; a child past this is stopped. */
const COMPILE_TIMEOUT_MS = 10_000;
/**
 * How many checks run at once on a node, wait for a place in all, run or wait per account, and how
 * many of the waiting places only an account with none waiting may take.
 */
export interface SyntaxQueueLimits {
  concurrent: number;
  waiting: number;
  perAccount: number;
  reserved: number;
}
/**
 * Two short-lived python3 processes at once; 64 waiting in all; 8 running or waiting per account; the
 * last 16 waiting places kept for accounts with none waiting, so a few accounts cannot fill the room.
 */
export const SYNTAX_QUEUE_LIMITS: SyntaxQueueLimits = { concurrent: 2, waiting: 64, perAccount: 8, reserved: 16 };

// Reads the source from stdin and only compiles it: compile() runs none of the user's code. The
// limits come first so that pathological input (deep nesting, huge literals) is stopped cheaply.
const COMPILE_ONLY = [
  'import resource, sys, json',
  'resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))',
  'resource.setrlimit(resource.RLIMIT_CPU, (5, 5))',
  'source = sys.stdin.buffer.read().decode("utf-8", "replace")',
  'try:',
  '    compile(source, "main.py", "exec", dont_inherit=True)',
  '    print(json.dumps({"ok": True}))',
  'except (SyntaxError, ValueError) as e:',
  '    print(json.dumps({"ok": False, "type": type(e).__name__, "msg": getattr(e, "msg", None) or str(e), "line": getattr(e, "lineno", None), "offset": getattr(e, "offset", None), "text": getattr(e, "text", None)}))',
  'except (MemoryError, RecursionError) as e:',
  '    print(json.dumps({"ok": False, "type": type(e).__name__, "msg": "the code is too deeply nested or too large to compile", "line": None}))',
].join('\n');

interface PythonVerdict {
  ok: boolean;
  type?: string;
  msg?: string;
  line?: number | null;
  offset?: number | null;
  text?: string | null;
}

/**
 * The places among a node's checks. The queue is bounded, in all and per account: a flood of
 * make_function calls is refused (rate_limited, retry shortly) rather than held in memory.
 * A place is counted before the first await, so checks asked for together are counted together.
 * A freed place goes to the waiting account whose turn came longest ago (round-robin by account),
 * so one account's many checks wait behind each other, not before other accounts'.
 */
function syntaxQueue(limits: SyntaxQueueLimits) {
  let running = 0;
  let waitingCount = 0;
  let turns = 0;
  /** Waiting checks by account (each resolves when it is handed a running place). */
  const waiting = new Map<string, Array<() => void>>();
  /** Running or waiting checks by account. */
  const perAccount = new Map<string, number>();
  /** When each account with checks in progress last had one start. */
  const lastTurn = new Map<string, number>();
  const busy = (detail: string) =>
    new DomainError('rate_limited', `the server's code checks are busy (${waitingCount} waiting${detail}); try again shortly`, {
      retry_after: 1,
    });

  /** Hands a finished check's place to the next waiting account's first check, or frees it. */
  function release(): void {
    let next: string | undefined;
    for (const account of waiting.keys()) {
      if (next === undefined || (lastTurn.get(account) ?? -1) < (lastTurn.get(next) ?? -1)) next = account;
    }
    if (next === undefined) {
      running--;
      return;
    }
    const queue = waiting.get(next)!;
    const resolve = queue.shift()!;
    if (queue.length === 0) waiting.delete(next);
    waitingCount--;
    lastTurn.set(next, ++turns);
    resolve();
  }

  return async function slot<T>(account: string, body: () => Promise<T>): Promise<T> {
    const mine = perAccount.get(account) ?? 0;
    if (mine >= limits.perAccount) {
      throw new DomainError(
        'rate_limited',
        `this account already has ${mine} code checks in progress on this server (at most ${limits.perAccount}); wait for them to finish and try again`,
        { retry_after: 1 },
      );
    }
    const mustWait = running >= limits.concurrent;
    if (mustWait && waitingCount >= limits.waiting) throw busy('');
    const queued = waiting.get(account)?.length ?? 0;
    if (mustWait && queued > 0 && waitingCount >= limits.waiting - limits.reserved) throw busy(`, this account ${queued} of them`);
    perAccount.set(account, mine + 1);
    try {
      if (mustWait) {
        // The place is handed over by release(): `running` already counts it.
        await new Promise<void>((resolve) => {
          const queue = waiting.get(account);
          if (queue) queue.push(resolve);
          else waiting.set(account, [resolve]);
          waitingCount++;
        });
      } else {
        running++;
        lastTurn.set(account, ++turns);
      }
      try {
        return await body();
      } finally {
        release();
      }
    } finally {
      const left = (perAccount.get(account) ?? 1) - 1;
      if (left <= 0) {
        perAccount.delete(account);
        lastTurn.delete(account);
      } else perAccount.set(account, left);
    }
  };
}

function compilePython(code: string): Promise<PythonVerdict> {
  return new Promise<PythonVerdict>((resolve) => {
    // An empty environment: nothing of the server's reaches the child.
    const child = spawn(PYTHON, ['-I', '-S', '-B', '-c', COMPILE_ONLY], { env: {}, stdio: ['pipe', 'pipe', 'ignore'] });
    let out = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), COMPILE_TIMEOUT_MS);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      if (out.length < 64 * 1024) out += chunk;
    });
    child.stdin.on('error', () => undefined);
    child.on('error', () => resolve({ ok: true })); // no python3 on the host: the run reports it instead
    child.on('close', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out) as PythonVerdict);
      } catch {
        resolve({
          ok: false,
          type: 'SyntaxError',
          msg: 'the code could not be compiled within the limits (too large or too deeply nested)',
          line: null,
        });
      }
    });
    child.stdin.end(code);
  });
}

/** Unmistakable TypeScript/JavaScript in code sent as Python (the default language). */
const TYPESCRIPT_SIGNS = [
  /^\s*export\s+(default\s+)?(async\s+)?(function|const|let|class|interface|type)\b/m,
  /^\s*(async\s+)?function\s+\w+\s*\(/m,
  /^\s*(const|let|var)\s+\w+(\s*:\s*[\w<>[\]| ]+)?\s*=/m,
  /^\s*import\s+(\{[^}]*\}|\*\s+as\s+\w+|\w+)\s+from\s+['"]/m,
  /^\s*(interface|type)\s+\w+\s*(=|\{)/m,
  /=>\s*[{(]/,
];
const PYTHON_SIGNS = [
  /^\s*def\s+\w+\s*\(.*\)\s*(->\s*[^:]+)?:\s*$/m,
  /^\s*(from\s+\w+(\.\w+)*\s+)?import\s+\w+(\s+as\s+\w+)?\s*$/m,
  /^\s*(elif|except)\b.*:\s*$/m,
];

export function looksLikeTypescript(code: string): boolean {
  return TYPESCRIPT_SIGNS.some((sign) => sign.test(code));
}

export function looksLikePython(code: string): boolean {
  return PYTHON_SIGNS.some((sign) => sign.test(code));
}

function pythonMessage(verdict: PythonVerdict): string {
  const where =
    typeof verdict.line === 'number'
      ? `line ${verdict.line}${typeof verdict.offset === 'number' && verdict.offset > 0 ? `, column ${verdict.offset}` : ''}: `
      : '';
  const text =
    typeof verdict.text === 'string' && verdict.text.trim() !== '' ? `\n    ${verdict.text.replace(/\n$/, '').slice(0, 200)}` : '';
  return `${where}${verdict.msg ?? 'invalid syntax'}${text}`;
}

/**
 * A syntax checker with its own bounded queue: refuses (validation_error, with the line) code that
 * does not parse in its language; the hint names the other language when the code looks like it.
 * `account`: whose place in the queue a check takes.
 */
export function syntaxChecker(limits: SyntaxQueueLimits = SYNTAX_QUEUE_LIMITS) {
  const slot = syntaxQueue(limits);
  const python = (code: string, account: string) => slot(account, () => compilePython(code));
  return async function checkSyntax(definition: Pick<FunctionDefinition, 'language' | 'code'>, account = ''): Promise<void> {
    const { language, code } = definition;
    if (language === 'python') {
      const verdict = await python(code, account);
      if (verdict.ok) return;
      const typescript = looksLikeTypescript(code) && (await transpileTypescript(code)).ok;
      const hint = typescript ? ' This looks like TypeScript: pass language: "typescript" (the default language is python).' : '';
      throw new DomainError(
        'validation_error',
        `code is not valid Python (${verdict.type ?? 'SyntaxError'}) at ${pythonMessage(verdict)}${hint}`,
        {
          field: 'code',
          language: 'python',
          ...(typeof verdict.line === 'number' ? { line: verdict.line } : {}),
          ...(typescript ? { looks_like: 'typescript' } : {}),
        },
      );
    }
    const transpiled = await transpileTypescript(code);
    if (transpiled.ok) return;
    const looksPython = looksLikePython(code) && (await python(code, account)).ok;
    const hint = looksPython ? ' This looks like Python: pass language: "python" (or leave language out).' : '';
    const line = /\(line (\d+)\)$/.exec(transpiled.message)?.[1];
    throw new DomainError('validation_error', `code is not valid TypeScript: ${transpiled.detail}${hint}`, {
      field: 'code',
      language: 'typescript',
      ...(line ? { line: Number(line) } : {}),
      ...(looksPython ? { looks_like: 'python' } : {}),
    });
  };
}

/** The node's checker (one queue per process). */
export const checkSyntax = syntaxChecker();
