// Runs one TypeScript function (already transpiled, with an inline source map) inside the sandbox.
// The request arrives as JSON on stdin so env values never sit in argv or in the process's initial
// environment. Fd 3 is a socket to the host carrying one JSON line per message: {"ready":true}
// once the runner waits for its request (a pooled sandbox may wait long before its run),
// {"started":true} once it has read it, then the final answer, and in code mode bridge requests
// (each answered by one line). stdin is read to its end: one sandbox, one request.
'use strict';
const fs = require('node:fs');
const Module = require('node:module');
const { pathToFileURL } = require('node:url');

const USER_FILE = '/function/main.ts';
// The `mcpworks` module (agent state through the bridge), in the runtime directory of every sandbox.
const GUEST_MODULES = '/sandbox/node_modules';
// Code-mode scripts are ES modules (top-level await) and need a file; /tmp is the run's own.
const SCRIPT_FILE = '/tmp/.mcpworks/main.mjs';

// process.exit as Node made it (user code gets the contract's, below).
const exitProcess = process.exit.bind(process);
let answered = false;

// The runner's own way out. Where the host cannot take what is left in stdout and stderr at the
// answer, it reads them until their pipes end (so nothing printed before it is lost). This
// process's copies of the pipes are let go once every 'exit' listener has run (ours is added last):
// the pipes then end once bubblewrap's small processes are killed, not after this larger process's
// memory teardown.
function exit(code) {
  process.on('exit', releaseOutput);
  exitProcess(code);
}

function releaseOutput() {
  try {
    fs.closeSync(1);
    fs.closeSync(2);
    // The lowest free numbers, 1 and 2 again: a write from here goes nowhere rather than failing.
    fs.openSync('/dev/null', 'w');
    fs.openSync('/dev/null', 'w');
  } catch {
    // The code closed them already: the pipes end with the kill, as they otherwise would.
  }
}

function answer(payload) {
  answered = true;
  fs.writeSync(3, payload + '\n');
}

// JSON has no NaN or Infinity, and JSON.stringify would write null for them without a word; like
// Python's encoder, refuse them. The second pass runs only when the text has a null to explain.
function strictStringify(value) {
  const encoded = JSON.stringify(value);
  if (typeof encoded === 'string' && encoded.includes('null')) {
    JSON.stringify(value, (key, item) => {
      if (typeof item === 'number' && !Number.isFinite(item)) throw new TypeError(`${item} is not JSON (JSON has no NaN or Infinity)`);
      return item;
    });
  }
  return encoded;
}

function failure(type, message, trace) {
  return JSON.stringify({ ok: false, type, message, traceback: trace || '' });
}

// Keep only frames in the user's file and show it as main.ts: never runner or host-looking paths.
function trimmedStack(error) {
  const stack = typeof error.stack === 'string' ? error.stack : '';
  const lines = stack.split('\n');
  const head = [];
  let i = 0;
  for (; i < lines.length && !/^\s+at /.test(lines[i]); i++) head.push(lines[i]);
  const frames = lines.slice(i).filter((line) => line.includes(USER_FILE));
  return [...head, ...frames].join('\n').split(`file://${USER_FILE}`).join('main.ts').split(USER_FILE).join('main.ts');
}

function errorType(error) {
  if (error && typeof error === 'object') {
    const ctor = error.constructor && error.constructor.name;
    if (typeof ctor === 'string' && ctor && ctor !== 'Object') return ctor;
    if (typeof error.name === 'string' && error.name) return error.name;
  }
  return 'Error';
}

function reportError(error) {
  const message = error instanceof Error ? error.message : String(error);
  answer(failure(errorType(error), message, error instanceof Error ? trimmedStack(error) : `Uncaught ${message}`));
}

function pickEntry(exported) {
  if (typeof exported === 'function') return exported;
  if (exported && typeof exported.default === 'function') return exported.default;
  if (exported && typeof exported.main === 'function') return exported.main;
  if (exported && exported.default && typeof exported.default.main === 'function') return exported.default.main;
  return undefined;
}

// Blocking request/answer over fd 3, as the generated `functions` package expects.
function installBridge() {
  // The generated package picks a TypeScript function's entry exactly as a run does.
  globalThis.__mcpworksPickEntry = pickEntry;
  const chunk = Buffer.alloc(64 * 1024);
  globalThis.__mcpworksBridge = (message) => {
    fs.writeSync(3, strictStringify({ bridge: message }) + '\n');
    const parts = [];
    for (;;) {
      const read = fs.readSync(3, chunk, 0, chunk.length, null);
      if (read === 0) throw new Error('the MCPWorks bridge closed');
      const end = chunk.indexOf(10);
      if (end !== -1 && end < read) {
        parts.push(Buffer.from(chunk.subarray(0, end)));
        return JSON.parse(Buffer.concat(parts).toString('utf8'));
      }
      parts.push(Buffer.from(chunk.subarray(0, read)));
    }
  };
}

async function runMain(request) {
  const userModule = new Module(USER_FILE, null);
  userModule.filename = USER_FILE;
  userModule.paths = [...Module._nodeModulePaths('/function'), ...request.libraryPaths];
  userModule._compile(request.code, USER_FILE);
  const entry = pickEntry(userModule.exports);
  if (!entry)
    throw Object.assign(
      new TypeError('no main function: export default function main(input), export function main, or module.exports.main'),
      { stack: '' },
    );
  return entry(request.input);
}

async function runScript(request) {
  fs.mkdirSync('/tmp/.mcpworks', { mode: 0o700 });
  // ES modules find bare imports only in node_modules directories above them: `mcpworks` from here.
  fs.symlinkSync(GUEST_MODULES, '/tmp/.mcpworks/node_modules');
  fs.writeFileSync(SCRIPT_FILE, request.code);
  // Scripts assign `result = …` without declaring it; strict module code needs the global to exist.
  globalThis.result = undefined;
  globalThis.output = undefined;
  globalThis.input_data = request.input;
  // `require("functions")` works in scripts too (ES modules have no require of their own).
  globalThis.require = Module.createRequire(SCRIPT_FILE);
  await import(pathToFileURL(SCRIPT_FILE).href);
  return assigned();
}

/** What the code assigned to `result`, else `output` (scripts: their own variables or globals). */
function assigned() {
  const captured = globalThis.__mcpworksCapture ? globalThis.__mcpworksCapture() : { result: globalThis.result, output: globalThis.output };
  return captured.result !== undefined && captured.result !== null ? captured.result : captured.output;
}

// A function's first compile loads and compiles Node's module-wrapping and source-map code; a
// pooled runner does it once while it waits, on a module of its own (not in the require cache),
// with source maps on. Its inline map is not JSON: Node keeps no map for it, so a run's
// `module.findSourceMap` finds nothing of the platform's, while the map-reading path is compiled.
function warmUp() {
  const file = '/sandbox/warm-up.js';
  const warm = new Module(file, null);
  warm.filename = file;
  warm.paths = [];
  const map = Buffer.from('not a source map').toString('base64');
  warm._compile(
    `"use strict";\nmodule.exports = function main(input) { return { greeting: \`Hello, \${input}!\` }; };\n//# sourceMappingURL=data:application/json;base64,${map}\n`,
    file,
  );
  strictStringify(pickEntry(warm.exports)('warm'));
}

let maxResult = 0;

/** The run's answer for the value it produced: encoded, size-checked, sent. */
function deliver(produced) {
  let encoded;
  try {
    encoded = strictStringify(produced === undefined ? null : produced);
    if (encoded === undefined) throw new TypeError(`a ${typeof produced} is not JSON`);
  } catch (error) {
    answer(failure('SerializationError', `the result is not JSON-serialisable: ${error.message}`));
    return;
  }
  if (Buffer.byteLength(encoded) > maxResult) {
    answer(failure('OutputSizeError', `the result is larger than ${maxResult} bytes`));
    return;
  }
  answer('{"ok":true,"result":' + encoded + '}');
}

// "pooled": started ahead of its run, so the wait for the request is free time.
const pooled = process.argv[2] === 'pooled';
process.argv.splice(2);

// Writes to stdout and stderr block until their bytes are in the socket (Node queues them once it
// is full, and a queued write would land after the answer, or never). So the answer, written after
// them, follows every byte printed before it: the host takes what is left in the sockets at the
// answer instead of waiting for their end (src/sandbox/wire/drain.ts). Blocking is a flag of the
// socket's open file, which every process the code starts shares: one that sets it non-blocking and
// cannot restore it (a Node child killed) would make the writes queue again, so each write sets it
// back first (one ioctl).
const HANDLE_WRITES = ['writev', 'writeBuffer', 'writeAsciiString', 'writeUtf8String', 'writeUcs2String', 'writeLatin1String'];
function blockingOutput() {
  for (const stream of [process.stdout, process.stderr]) {
    const handle = stream._handle;
    if (!handle || typeof handle.setBlocking !== 'function') continue;
    handle.setBlocking(true);
    for (const name of HANDLE_WRITES) {
      const write = handle[name];
      if (typeof write !== 'function') continue;
      handle[name] = function blockingWrite(...args) {
        handle.setBlocking(true);
        return write.apply(this, args);
      };
    }
  }
}

async function main() {
  blockingOutput();
  process.setSourceMapsEnabled(true);
  if (pooled) warmUp();
  // The ES module loader starts on first use (~4 ms); code-mode scripts are ES modules.
  if (pooled) await import('node:fs');
  fs.writeSync(3, '{"ready":true}\n');
  const received = fs.readFileSync(0, 'utf8');
  // The start ack (STARTED_LINE in wire/messages.ts), before anything of the run's own: a sandbox
  // gone without it never ran the code, so the host runs it elsewhere; one that sent it, never.
  if (received) fs.writeSync(3, '{"started":true}\n');
  const request = JSON.parse(received);
  // `require('mcpworks')` from any CommonJS module (the function, a code-mode callee): a global path, as NODE_PATH gives.
  const declaredNodePath = process.env.NODE_PATH;
  process.env.NODE_PATH = GUEST_MODULES;
  Module._initPaths();
  if (declaredNodePath === undefined) delete process.env.NODE_PATH;
  else process.env.NODE_PATH = declaredNodePath;
  for (const [name, value] of Object.entries(request.env)) process.env[name] = value;
  maxResult = request.maxResultBytes;
  if (request.bridge) installBridge();
  // process.exit(0) ends the code early but successfully, as Python's sys.exit(0) does: the answer
  // is what it had assigned to `result` (else `output`). Any other status is a ProcessExitError.
  process.exit = (code) => {
    const status = code === undefined || code === null ? (process.exitCode ?? 0) : code;
    if (!answered && Number(status) === 0) deliver(assigned());
    if (!answered) answer(failure('ProcessExitError', `the code exited with status ${status} (process.exit(${status}))`));
    exit(0);
  };

  let produced;
  try {
    produced = await (request.entry === 'script' ? runScript(request) : runMain(request));
  } catch (error) {
    reportError(error);
    return;
  }
  deliver(produced);
}

// An exception thrown from a callback or a promise nobody awaited still belongs to the function.
function reportUncaught(error) {
  if (!answered) reportError(error);
  exit(0);
}
process.on('uncaughtException', reportUncaught);
process.on('unhandledRejection', reportUncaught);
// The event loop emptied while the code still awaited: a promise nothing is left to settle (no
// timer, I/O or callback). Say so, rather than "exited with status 0".
process.on('beforeExit', () => {
  if (answered) return;
  answer(
    failure(
      'UnsettledAwaitError',
      'the code awaited a promise that never settled: nothing (no timer, I/O or callback) was left to settle it, so the function ended without a result',
    ),
  );
  exit(0);
});

// Leave as soon as the answer is sent: timers or sockets the function left open must not hold the run.
main().then(
  () => exit(0),
  (error) => {
    if (!answered) answer(failure('Error', String(error && error.message ? error.message : error)));
    exit(0);
  },
);
