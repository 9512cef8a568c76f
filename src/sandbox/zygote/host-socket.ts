/** The zygotes' host socket: every child of every zygote connects its streams here, by token. */
import { chmodSync, chownSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { LineReader } from '../wire/json-lines.js';
import { HELLO_MAX_BYTES, parseHello } from '../wire/messages.js';

/** A child that has not connected and reported ready in this long is given up. */
export const CHILD_START_MS = 10_000;

export interface Registration {
  streams: Partial<Record<'out' | 'err' | 'chan', (socket: Socket) => void>>;
}

/** One Unix socket every child of every zygote of a sandbox instance connects to, by token. */
export class HostSocket {
  readonly dir: string;
  private readonly server: Server;
  private readonly waiting = new Map<string, Registration>();
  readonly listening: Promise<void>;

  constructor(parent: string, owner: { uid: number; gid: number } | null) {
    this.dir = join(parent, 'zygote-sock');
    mkdirSync(this.dir, { mode: 0o755 });
    chmodSync(this.dir, 0o755);
    const path = join(this.dir, 'host.sock');
    this.server = createServer((socket) => this.accept(socket));
    this.listening = new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(path, () => {
        // Only the sandbox users (their group) need it; the token decides which run a connection
        // belongs to.
        if (owner) chownSync(path, owner.uid, owner.gid);
        chmodSync(path, 0o660);
        resolve();
      });
    });
    this.server.unref();
  }

  expect(token: string, streams: Registration['streams']): void {
    this.waiting.set(token, { streams });
  }

  forget(token: string): void {
    this.waiting.delete(token);
  }

  private accept(socket: Socket): void {
    socket.on('error', () => {});
    // The greeting, "TOKEN STREAM\n"; whatever follows it is the stream's.
    const greeting = new LineReader({ maxLineBytes: HELLO_MAX_BYTES, onOverflow: () => socket.destroy() });
    const timer = setTimeout(() => socket.destroy(), CHILD_START_MS);
    const onData = (chunk: Buffer) => {
      const [line] = greeting.push(chunk, 1);
      if (line === undefined) return;
      socket.off('data', onData);
      clearTimeout(timer);
      const hello = parseHello(line);
      const registration = hello && this.waiting.get(hello.token);
      const take = hello && registration?.streams[hello.stream];
      if (!hello || !registration || !take) {
        socket.destroy();
        return;
      }
      // Each stream of a token is taken once: a second connection with the same token is refused.
      delete registration.streams[hello.stream];
      if (Object.keys(registration.streams).length === 0) this.waiting.delete(hello.token);
      socket.pause();
      const rest = greeting.rest();
      if (rest.length > 0) socket.unshift(rest);
      take(socket);
      socket.resume();
    };
    socket.on('data', onData);
  }

  close(): void {
    this.server.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
