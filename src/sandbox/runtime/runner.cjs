// Runs one TypeScript function (already transpiled to CommonJS with an inline source map) inside
// the sandbox. The request arrives as JSON on stdin so env values never sit in argv or in the
// process's initial environment; the answer leaves on fd 3 so the function's stdout stays its log.
'use strict';
const fs = require('node:fs');
const Module = require('node:module');

const USER_FILE = '/function/main.ts';

function answer(payload) {
  fs.writeSync(3, payload);
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
  return [...head, ...frames].join('\n').split(USER_FILE).join('main.ts');
}

function errorType(error) {
  if (error && typeof error === 'object') {
    const ctor = error.constructor && error.constructor.name;
    if (typeof ctor === 'string' && ctor && ctor !== 'Object') return ctor;
    if (typeof error.name === 'string' && error.name) return error.name;
  }
  return 'Error';
}

function pickEntry(exported) {
  if (typeof exported === 'function') return exported;
  if (exported && typeof exported.default === 'function') return exported.default;
  if (exported && typeof exported.main === 'function') return exported.main;
  if (exported && exported.default && typeof exported.default.main === 'function') return exported.default.main;
  return undefined;
}

async function main() {
  const request = JSON.parse(fs.readFileSync(0, 'utf8'));
  for (const [name, value] of Object.entries(request.env)) process.env[name] = value;
  const maxResult = request.maxResultBytes;
  process.setSourceMapsEnabled(true);

  const userModule = new Module(USER_FILE, null);
  userModule.filename = USER_FILE;
  userModule.paths = Module._nodeModulePaths('/function');
  const input = request.input;
  let produced;
  try {
    userModule._compile(request.code, USER_FILE);
    const entry = pickEntry(userModule.exports);
    if (!entry) {
      answer(failure('TypeError', 'no main function: export default function main(input), export function main, or module.exports.main'));
      return;
    }
    produced = await entry(input);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    answer(failure(errorType(error), message, error instanceof Error ? trimmedStack(error) : `Uncaught ${message}`));
    return;
  }

  let encoded;
  try {
    encoded = JSON.stringify(produced === undefined ? null : produced);
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

// An exception thrown from a callback or a promise nobody awaited still belongs to the function.
function reportUncaught(error) {
  const message = error instanceof Error ? error.message : String(error);
  answer(failure(errorType(error), message, error instanceof Error ? trimmedStack(error) : `Uncaught ${message}`));
  process.exit(0);
}
process.on('uncaughtException', reportUncaught);
process.on('unhandledRejection', reportUncaught);

// Leave as soon as the answer is sent: timers or sockets the function left open must not hold the run.
main().then(
  () => process.exit(0),
  (error) => {
    answer(failure('Error', String(error && error.message ? error.message : error)));
    process.exit(0);
  },
);
