/**
 * A tiny npm registry on loopback for tests: package metadata and tarballs of one-file packages,
 * packages whose metadata request stalls (held open until the registry closes), and a package
 * with an enormous metadata document. It counts requests in flight, so tests can see how many
 * installs run at once without timing anything.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';

export interface FakeRegistry {
  url: string;
  /** Metadata requests being held right now, by package name. */
  stalled(): string[];
  /** The most metadata requests held at once. */
  maxStalled: number;
  /** Every package name whose metadata was asked for. */
  requested: string[];
  /** Stops stalling: held requests, and stalling packages from now on, get 404. */
  release(): void;
  close(): Promise<void>;
}

export interface FakeRegistryOptions {
  /** Packages whose metadata request never gets an answer. */
  stall?: (name: string) => boolean;
  /** Packages whose metadata is about `hugeBytes` of JSON (many versions). */
  huge?: (name: string) => boolean;
  hugeBytes?: number;
}

function tarEntry(name: string, content: Buffer): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0, 100, 'utf8');
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(`${content.length.toString(8).padStart(11, '0')}\0`, 124);
  // A fixed mtime: the tarball must hash the same every time it is built (its integrity is in the metadata).
  header.write(`${(1_700_000_000).toString(8).padStart(11, '0')}\0`, 136);
  header.write('        ', 148);
  header.write('0', 156);
  header.write('ustar\0', 257);
  header.write('00', 263);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  const padding = Buffer.alloc((512 - (content.length % 512)) % 512);
  return Buffer.concat([header, content, padding]);
}

/** A package tarball: package.json and an index.js exporting `value`. */
export function packageTarball(name: string, version: string, value: unknown): Buffer {
  const tar = Buffer.concat([
    tarEntry('package/package.json', Buffer.from(JSON.stringify({ name, version, main: 'index.js' }))),
    tarEntry('package/index.js', Buffer.from(`module.exports = ${JSON.stringify(value)};\n`)),
    Buffer.alloc(1024),
  ]);
  return gzipSync(tar);
}

export async function startFakeRegistry(options: FakeRegistryOptions = {}): Promise<FakeRegistry> {
  const held = new Map<ServerResponse, string>();
  const state = { maxStalled: 0, requested: [] as string[], stalling: true };
  const notFound = (response: ServerResponse) => {
    response.writeHead(404, { 'content-type': 'application/json' });
    response.end('{"error":"not found"}');
  };
  let base = '';

  const metadata = (name: string): string => {
    const tarball = packageTarball(name, '1.0.0', name);
    const integrity = `sha512-${createHash('sha512').update(tarball).digest('base64')}`;
    const version = (v: string) => ({ name, version: v, dist: { tarball: `${base}/${name}/-/${name}-1.0.0.tgz`, integrity } });
    const versions: Record<string, unknown> = { '1.0.0': version('1.0.0') };
    if (options.huge?.(name)) {
      // Thousands of versions with long descriptions: npm must hold and parse it all.
      const filler = 'x'.repeat(4000);
      for (let i = 0; i * 4100 < (options.hugeBytes ?? 64 * 1024 * 1024); i++)
        versions[`0.0.${i}`] = { ...version(`0.0.${i}`), description: filler };
    }
    return JSON.stringify({ name, 'dist-tags': { latest: '1.0.0' }, versions });
  };

  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const path = decodeURIComponent(new URL(request.url ?? '/', 'http://x').pathname).slice(1);
    const tarball = /^([^/]+)\/-\/[^/]+-1\.0\.0\.tgz$/.exec(path);
    if (tarball) {
      response.writeHead(200, { 'content-type': 'application/octet-stream' });
      response.end(packageTarball(tarball[1], '1.0.0', tarball[1]));
      return;
    }
    if (!/^[a-z0-9][a-z0-9._-]*$/.test(path)) return notFound(response);
    state.requested.push(path);
    if (options.stall?.(path)) {
      if (!state.stalling) return notFound(response);
      held.set(response, path);
      state.maxStalled = Math.max(state.maxStalled, held.size);
      response.on('close', () => held.delete(response));
      return;
    }
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(metadata(path));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: `${base}/`,
    stalled: () => [...held.values()],
    get maxStalled() {
      return state.maxStalled;
    },
    requested: state.requested,
    release() {
      state.stalling = false;
      for (const response of held.keys()) notFound(response);
    },
    async close() {
      for (const response of held.keys()) response.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
