// The sandbox spawner: a small Node process that starts sandbox helpers for the server (see
// src/sandbox/spawner.ts). The server's process is large (the embedded database), and spawning
// from it is a fork of that whole address space on its event loop; forking from this small one
// costs the server only a few messages. Not run inside the sandbox: it runs on the host, with the
// server's user, started with the sandbox's minimal environment (no server secrets).
//
// Requests arrive on the IPC channel (JSON): {op: "spawn", id, file, args, env, seccomp} starts
// `file` with stdio pipes at fds 0-3 and the seccomp program opened at fd 4; {op: "kill", id,
// signal} signals it. The pipes go back on the IPC channel, one {op: "stdio", id, index} message
// per pipe carrying its handle; the server writes nothing to the helper until all four are in (so
// a helper whose spawner died before handing them all over can be started again, untouched).
// Events are JSON lines on stdout: {op: "spawned", id, pid}, {op: "failed", id, message} and
// {op: "exit", id, code, signal}. Not on the IPC channel: each handle waits there for the server's
// acknowledgement, and a helper's end must not wait behind the next helper's pipes.
// This process never reads or writes the pipes: requests (with env values) go from the server
// straight to the helper's stdin.
'use strict';
const { spawn } = require('node:child_process');
const { closeSync, openSync } = require('node:fs');

const children = new Map();

// Dies with the server: its end of the channel closes when it exits, however it exits.
process.on('disconnect', () => process.exit(0));
// A terminal's Ctrl-C, or a supervisor's SIGTERM to the whole process group (systemd's
// KillMode=control-group, timeout), reaches this process too; the server decides when it ends.
process.on('SIGINT', () => {});
process.on('SIGHUP', () => {});
process.on('SIGTERM', () => {});
process.stdout.on('error', () => process.exit(0));

function event(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function start({ id, file, args, env, seccomp }) {
  let fd;
  let child;
  try {
    fd = openSync(seccomp, 'r');
    child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe', 'pipe', fd], env });
  } catch (error) {
    event({ op: 'failed', id, message: String(error && error.message) });
    return;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (child.pid === undefined) {
    // spawn(2) failed (ENOENT, EAGAIN…): reported by an 'error' event.
    child.once('error', (error) => event({ op: 'failed', id, message: String(error && error.message) }));
    return;
  }
  // Not one byte may be read here: the handles go to the server, and until this process closes its
  // copy (when the server acknowledges each handle) a reading copy would race the server for data.
  for (const stream of [child.stdio[1], child.stdio[2], child.stdio[3]]) {
    const handle = stream._handle;
    if (handle) {
      handle.reading = false;
      handle.readStop();
    }
  }
  children.set(id, child);
  child.on('error', () => {});
  child.once('exit', (code, signal) => {
    children.delete(id);
    event({ op: 'exit', id, code, signal });
  });
  event({ op: 'spawned', id, pid: child.pid });
  for (const index of [0, 1, 2, 3]) {
    if (process.connected) process.send({ op: 'stdio', id, index }, child.stdio[index], () => {});
  }
}

process.on('message', (message) => {
  if (message.op === 'spawn') {
    start(message);
  } else if (message.op === 'kill') {
    const child = children.get(message.id);
    try {
      if (child) child.kill(message.signal);
    } catch {
      // not a signal name: nothing to do
    }
  }
});
