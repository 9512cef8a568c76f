// Worker thread of the server that starts the schema worker processes and relays their messages
// (src/run/schema-guard.ts). Starting a process is fork()+exec: a fork of the server's whole
// address space (the embedded database makes it large), which holds the forking thread until the
// child has exec'd (9–20 ms on an idle machine, far more on a loaded one). A schema worker is
// killed and replaced after every overrun, so forking on the main thread put that wait in front of
// every request; here it holds only this thread. Plain JavaScript, like schema-worker.mjs.
//
// From the server (parentPort): {op: 'spawn', id, file, execArgv, idle}, {op: 'send', id, message},
// {op: 'kill', id}. To the server: {op: 'spawned', id, pid}, {op: 'message', id, message},
// {op: 'closed', id, stderr} (the process ended; the tail of its stderr), {op: 'failed', id}.
import { execFileSync, fork } from 'node:child_process';
import { parentPort } from 'node:worker_threads';

const workers = new Map();

// util-linux's chrt (Debian: essential) starts a worker under SCHED_IDLE: it then runs only on
// CPU time no other thread wants, and a waking server thread preempts it at once (a nice value
// still let it finish its slice). Node has no call for a scheduling policy. Tried once: where the
// host refuses it (a seccomp profile, no chrt), workers start as they are and the server's nice applies.
const CHRT = '/usr/bin/chrt';
let idleAllowed;
function canStartIdle() {
  if (idleAllowed === undefined) {
    try {
      execFileSync(CHRT, ['--idle', '0', '/bin/true'], { stdio: 'ignore', env: {}, timeout: 10_000 });
      idleAllowed = true;
    } catch {
      idleAllowed = false;
    }
  }
  return idleAllowed;
}

function spawn(id, file, execArgv, idle) {
  let worker;
  try {
    const asIdle = idle === true && canStartIdle();
    worker = fork(file, [], {
      // chrt execs node in its place: the same pid, channel and environment.
      ...(asIdle ? { execPath: CHRT } : {}),
      execArgv: asIdle ? ['--idle', '0', process.execPath, ...execArgv] : execArgv,
      // None of the server's environment (database URL, secrets) is needed or wanted there.
      env: {},
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'advanced',
    });
  } catch {
    parentPort.postMessage({ op: 'failed', id });
    return;
  }
  workers.set(id, worker);
  let stderr = '';
  worker.stderr?.setEncoding('utf8');
  worker.stderr?.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-4096);
  });
  worker.on('message', (message) => parentPort.postMessage({ op: 'message', id, message }));
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    workers.delete(id);
    parentPort.postMessage({ op: 'closed', id, stderr });
  };
  worker.on('error', () => {
    // A failed send or kill: the process is ended, and its close reported.
    try {
      worker.kill('SIGKILL');
    } catch {
      // gone already
    }
    if (worker.pid === undefined) end();
  });
  worker.on('close', end);
  if (worker.pid !== undefined) parentPort.postMessage({ op: 'spawned', id, pid: worker.pid });
}

parentPort.on('message', (request) => {
  if (request.op === 'spawn') return spawn(request.id, request.file, request.execArgv, request.idle);
  const worker = workers.get(request.id);
  if (!worker) return;
  if (request.op === 'send') {
    if (worker.connected) worker.send(request.message, undefined, undefined, () => {});
  } else if (request.op === 'kill') {
    worker.kill('SIGKILL');
  }
});
