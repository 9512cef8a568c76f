// The sandbox's command lines and shapes (plan/*), as data. Pure: no root, no bubblewrap.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sandboxLimitsFor, type SandboxRequest } from '../../core/sandbox.js';
import { decodeCommandFrame } from '../wire/command-frame.js';
import { baseBubblewrapArgs, zygoteBubblewrapArgs, type SandboxLayout } from './bwrap-args.js';
import { commandFrame, helperArgs, helperDeadlineMs, shapeFor, type ShapeContext } from './shape.js';
import { checkRequest, requestPayload, zygoteRunLine } from './request.js';
import { zygoteSpecFor } from './zygote-spec.js';
import { RawJson } from '../../core/raw-json.js';

const layout: SandboxLayout = {
  runtimeDir: '/tmp/mcpworks-sandbox-x',
  nodeBinary: '/opt/node/bin/node',
  network: false,
  masks: { files: ['kcore'], dirs: ['acpi'] },
  systemDirs: ['--symlink', 'usr/bin', '/bin'],
};
const limits = sandboxLimitsFor({ timeoutSeconds: 10, memoryMb: 512, maxResultBytes: 1024 });
const context = (overrides: Partial<ShapeContext> = {}): ShapeContext => ({
  baseArgs: baseBubblewrapArgs(layout),
  nodeBinary: layout.nodeBinary,
  bwrap: '/usr/bin/bwrap',
  network: false,
  cgroups: { memory: true, pids: true },
  fixedUser: null,
  ...overrides,
});
const python: SandboxRequest = { language: 'python', code: 'def main(i): return i', input: { a: 1 }, limits };
const typescript: SandboxRequest = { language: 'typescript', code: '', input: null, limits };

/** The index of `needle` as consecutive arguments. */
function at(args: readonly string[], ...needle: string[]): number {
  return args.findIndex((_, index) => needle.every((part, offset) => args[index + offset] === part));
}

test('the base layout: every namespace, no capabilities, read-only /usr, masked /proc, user namespaces off without network', () => {
  const args = baseBubblewrapArgs(layout);
  for (const flag of [
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-net',
    '--die-with-parent',
    '--new-session',
    '--disable-userns',
  ]) {
    assert.ok(args.includes(flag), flag);
  }
  assert.ok(at(args, '--cap-drop', 'ALL') !== -1);
  assert.ok(at(args, '--ro-bind', '/usr', '/usr') !== -1);
  assert.ok(at(args, '--symlink', 'usr/bin', '/bin') !== -1);
  assert.ok(at(args, '--ro-bind', '/tmp/mcpworks-sandbox-x/bin/empty', '/proc/kcore') !== -1);
  assert.ok(at(args, '--tmpfs', '/proc/acpi', '--remount-ro', '/proc/acpi') !== -1);
  // A node binary outside /usr is bound where it is; one inside is mounted with /usr already.
  assert.ok(at(args, '--ro-bind', '/opt/node/bin/node', '/opt/node/bin/node') !== -1);
  assert.ok(!baseBubblewrapArgs({ ...layout, nodeBinary: '/usr/bin/node' }).includes('/usr/bin/node'));
  // slirp4netns joins the user namespace, so with the network on the nested one is left out.
  assert.ok(!baseBubblewrapArgs({ ...layout, network: true }).includes('--disable-userns'));
});

test('a Python shape: seccomp from fd 4, the compiled runner, the helper options before bubblewrap', () => {
  const shape = shapeFor(python, context());
  const split = shape.command.indexOf('--');
  assert.deepEqual(shape.command.slice(0, split), helperArgs(python, context()));
  assert.equal(shape.command[split + 1], '/usr/bin/bwrap');
  assert.deepEqual(shape.command.slice(-8), ['--seccomp', '4', '--', '/usr/bin/python3', '-I', '-S', '-B', '/sandbox/runner.pyc']);
  assert.ok(at(shape.command, '--size', String(limits.tmpfsBytes), '--perms', '1777', '--tmpfs', '/tmp') !== -1);
  assert.deepEqual(shape.cgroupLimits, { memoryBytes: 512 * 1024 * 1024, maxProcesses: 64 });
  assert.equal(shape.label, 'python 512 MB');
  assert.equal(
    shape.key,
    shapeFor({ ...python, code: 'other', input: 2, env: { A: 'b' } }, context()).key,
    'code, input and env are not part of the shape',
  );
});

test('a TypeScript shape: node with a heap below the memory limit, node_modules and the library link', () => {
  const shape = shapeFor({ ...typescript, nodeModulesDir: '/cache/nm', libraryPaths: ['/opt/lib/node'] }, context());
  assert.deepEqual(shape.command.slice(-4), ['/opt/node/bin/node', '--max-old-space-size=384', '--use-openssl-ca', '/sandbox/runner.cjs']);
  assert.ok(at(shape.command, '--ro-bind', '/cache/nm', '/function/node_modules') !== -1);
  assert.ok(at(shape.command, '--symlink', '/opt/lib/node', '/node_modules') !== -1);
  assert.deepEqual(shape.viewSources, ['/cache/nm']);
  assert.equal(shape.label, 'typescript 512 MB node_modules library');
});

test('mounts go parent before child, whatever order the request names them in', () => {
  const mounts = [
    { source: '/h/inner', target: '/opt/pkg/inner' },
    { source: '/h/pkg', target: '/opt/pkg' },
  ];
  const shape = shapeFor({ ...python, mounts }, context());
  const parent = at(shape.command, '--ro-bind', '/h/pkg', '/opt/pkg');
  const child = at(shape.command, '--ro-bind', '/h/inner', '/opt/pkg/inner');
  assert.ok(parent !== -1 && child !== -1 && parent < child);
  assert.deepEqual(shape.viewSources, ['/h/inner', '/h/pkg']);
});

test('helper options: rlimits stand in for missing cgroups; a fixed user; fds kept; the network pipes', () => {
  const full = helperArgs(python, context());
  assert.ok(at(full, '--rlimit', 'cpu=10:11') !== -1);
  assert.ok(!full.some((arg) => arg.startsWith('as=') || arg.startsWith('nproc=')));
  assert.ok(at(full, '--deadline-ms', String(helperDeadlineMs(limits))) !== -1);
  assert.equal(helperDeadlineMs(limits), 11_000);
  assert.ok(at(full, '--keep-fds', '5') !== -1);
  assert.ok(!full.includes('--user'));
  const bare = helperArgs(
    typescript,
    context({ cgroups: { memory: false, pids: false }, fixedUser: { uid: 65534, gid: 65534 }, network: true }),
  );
  assert.ok(at(bare, '--rlimit', `as=${(512 + 1024) * 1024 * 1024}:${(512 + 1024) * 1024 * 1024}`) !== -1);
  assert.ok(at(bare, '--rlimit', 'nproc=256:256') !== -1);
  assert.ok(at(bare, '--user', '65534:65534') !== -1);
  assert.ok(at(bare, '--keep-fds', '7') !== -1);
  const networked = shapeFor(python, context({ network: true }));
  assert.ok(at(networked.command, '/usr/bin/bwrap', '--info-fd', '5', '--block-fd', '6') !== -1);
});

test("the command frame adds the run's uid and, for a pooled sandbox, the clock signal and its mark", () => {
  const shape = shapeFor(python, context());
  assert.deepEqual(decodeCommandFrame(commandFrame(shape, false, null)), shape.command);
  assert.deepEqual(decodeCommandFrame(commandFrame(shape, true, 2_000_000_001)), [
    '--user',
    '2000000001:65534',
    '--clock-on-signal',
    ...shape.command,
    'pooled',
  ]);
});

test('a zygote spec: allow-listed imports only, sorted; its key has no CPU limit; none for TypeScript or without warm', () => {
  const warm = { group: 'ns-1', owner: 'acct-1', imports: ['pandas', 'numpy', 'os', 'not_a_package', 'numpy', 'pandas.core'] };
  const request = { ...python, warm };
  const shape = shapeFor(request, context());
  const spec = zygoteSpecFor(request, shape, layout.masks)!;
  assert.deepEqual(spec.imports, ['numpy', 'pandas']);
  assert.equal(spec.owner, 'acct-1');
  assert.equal(spec.label, 'python 512 MB numpy,pandas');
  assert.deepEqual(spec.config.rlimits, { fsize: [limits.maxFileBytes, limits.maxFileBytes], core: [0, 0], nofile: [1024, 1024] });
  const otherCpu = { ...request, limits: { ...limits, cpuSeconds: 3 } };
  assert.equal(zygoteSpecFor(otherCpu, shapeFor(otherCpu, context()), layout.masks)!.key, spec.key);
  assert.equal(zygoteSpecFor({ ...request, warm: { group: 'ns-1', imports: [] } }, shape, layout.masks)!.owner, 'group:ns-1');
  assert.equal(zygoteSpecFor(python, shape, layout.masks), null);
  assert.equal(zygoteSpecFor({ ...typescript, warm }, shape, layout.masks), null);
});

test("a zygote's bubblewrap: no nested user namespace, its capabilities, cgroup and socket directories, zygote.py", () => {
  const base = baseBubblewrapArgs(layout);
  const args = zygoteBubblewrapArgs(
    base,
    { imports: ['numpy'], config: { tmpfsBytes: 1024 }, mounts: [] },
    { memoryDir: '/cg/m', pidsDir: '/cg/p', socketDir: '/run/sock' },
  );
  assert.ok(!args.includes('--disable-userns'));
  assert.ok(at(args, '--cap-add', 'CAP_SYS_ADMIN', '--cap-add', 'CAP_NET_ADMIN', '--cap-add', 'CAP_SETPCAP') !== -1);
  assert.ok(at(args, '--bind', '/cg/m', '/sandbox/zygote/cg-memory', '--bind', '/cg/p', '/sandbox/zygote/cg-pids') !== -1);
  assert.ok(at(args, '--ro-bind', '/run/sock', '/sandbox/zygote/sock') !== -1);
  assert.ok(!args.includes('--seccomp'), 'each child loads seccomp itself');
  // Each child makes its own cgroup namespace once in its run's group (cgroup v2's nsdelegate).
  assert.ok(base.includes('--unshare-cgroup-try') && !args.includes('--unshare-cgroup-try'));
  assert.deepEqual(JSON.parse(args.at(-1)!), { imports: ['numpy'], preload: null, tmpfsBytes: 1024 });
  const preload = { module: 'functions', paths: ['/opt/mcpworks/python'] };
  const preloading = zygoteBubblewrapArgs(
    base,
    { imports: [], preload, config: { tmpfsBytes: 1024 }, mounts: [] },
    {
      memoryDir: '/cg/m',
      pidsDir: '/cg/p',
      socketDir: '/run/sock',
    },
  );
  assert.deepEqual(JSON.parse(preloading.at(-1)!), { imports: [], preload, tmpfsBytes: 1024 });
});

test("a zygote preloads code mode's package only from library paths inside the request's mounts, by an import name", () => {
  const mounts = [{ source: '/cache/pkg', target: '/opt/mcpworks' }];
  const request = { ...python, mounts, libraryPaths: ['/opt/mcpworks/python'], warm: { group: 'ns-1', imports: [], preload: 'functions' } };
  const spec = zygoteSpecFor(request, shapeFor(request, context()), layout.masks)!;
  assert.deepEqual(spec.preload, { module: 'functions', paths: ['/opt/mcpworks/python'] });
  // The preload is part of the zygote's identity: runs without it never share its zygote.
  const plain = { ...request, warm: { group: 'ns-1', imports: [] } };
  const plainSpec = zygoteSpecFor(plain, shapeFor(plain, context()), layout.masks)!;
  assert.equal(plainSpec.preload, null);
  assert.notEqual(plainSpec.key, spec.key);
  for (const other of [
    { ...request, libraryPaths: ['/opt/elsewhere'] },
    { ...request, libraryPaths: ['/opt/mcpworks/../x'] },
    { ...request, libraryPaths: ['/opt/mcpworks-other'] },
    { ...request, libraryPaths: [] },
    { ...request, mounts: [] },
    { ...request, warm: { ...request.warm, preload: 'os.path' } },
    { ...request, warm: { ...request.warm, preload: '../x' } },
  ]) {
    assert.equal(zygoteSpecFor(other, shapeFor(other, context()), layout.masks)!.preload, null, JSON.stringify(other.libraryPaths));
  }
});

test('request checks: env names, NUL bytes, mount targets under /opt, absolute library paths', () => {
  assert.doesNotThrow(() =>
    checkRequest({ ...python, env: { API_KEY: 'x' }, mounts: [{ source: '/h', target: '/opt/a.b/c' }], libraryPaths: ['/opt/x'] }),
  );
  const bads: Partial<SandboxRequest>[] = [
    { env: { '1X': 'v' } },
    { env: { X: 'a\0b' } },
    { mounts: [{ source: '/h', target: '/etc' }] },
    { mounts: [{ source: '/h', target: '/opt/../etc' }] },
    { mounts: [{ source: 'relative', target: '/opt/a' }] },
    { libraryPaths: ['/opt/../etc'] },
    { libraryPaths: ['lib'] },
  ];
  for (const bad of bads) {
    assert.throws(
      () => checkRequest({ ...python, ...bad }),
      (error: Error & { type?: string }) => error.type === 'validation_error',
      JSON.stringify(bad),
    );
  }
});

test("the payload carries code, input and env; a raw input goes in as its bytes; the zygote line sets the run's clocks", () => {
  assert.deepEqual(JSON.parse(requestPayload({ ...python, env: { A: 'b' } }, 'code')), {
    code: 'code',
    input: { a: 1 },
    env: { A: 'b' },
    maxResultBytes: 1024,
    entry: 'main',
    libraryPaths: [],
    bridge: false,
  });
  const raw = JSON.parse(requestPayload({ ...python, input: new RawJson(Buffer.from('{"big":[1,2,"$&"]}')) }, 'c'));
  assert.deepEqual(raw.input, { big: [1, 2, '$&'] });
  assert.deepEqual(JSON.parse(zygoteRunLine({ ...limits, cpuSeconds: 2.7 })), { cpuSeconds: 2, wallMs: 11_000 });
});

test('a shape is planned once per language, limits and views: the same frozen object, never one of other views or limits', () => {
  const shared = context();
  const shape = shapeFor(python, shared);
  // Another request of the same shape (other code, input, env) gets the remembered object, which no caller can change.
  assert.equal(shapeFor({ ...python, code: 'other', input: 2, env: { A: 'b' } }, shared), shape);
  assert.ok(Object.isFrozen(shape) && Object.isFrozen(shape.command) && Object.isFrozen(shape.cgroupLimits));
  assert.throws(() => (shape.command as string[]).push('--bind'));
  // Other mounts (another tenant's library), other limits, another language: a shape of their own, as planned afresh.
  const mounted = shapeFor({ ...python, mounts: [{ source: '/srv/tenant-b', target: '/opt/lib' }] }, shared);
  assert.notEqual(mounted.key, shape.key);
  assert.ok(mounted.command.includes('/srv/tenant-b') && !shape.command.includes('/srv/tenant-b'));
  assert.ok(!shapeFor(python, shared).command.includes('/srv/tenant-b'));
  const larger = shapeFor({ ...python, limits: { ...limits, memoryMb: 1024 } }, shared);
  assert.deepEqual(larger.cgroupLimits, { memoryBytes: 1024 * 1024 * 1024, maxProcesses: 64 });
  assert.equal(shapeFor(python, shared).cgroupLimits.memoryBytes, 512 * 1024 * 1024);
  assert.notEqual(shapeFor(typescript, shared).key, shape.key);
  // Another context (network on) is planned on its own.
  assert.notEqual(shapeFor(python, context({ network: true })).key, shape.key);
  // The zygote key from the remembered shape is the one built from its parts.
  const warm = { ...python, warm: { group: 'ns', owner: 'acct', imports: [] } };
  const spec = zygoteSpecFor(warm, shape, layout.masks);
  const cpuFree = shape.command.map((arg) => (arg.startsWith('cpu=') ? 'cpu=run' : arg));
  assert.equal(spec?.key, JSON.stringify([cpuFree, shape.cgroupLimits, shape.maxLogBytes, 'acct', 'ns', [], null]));
  assert.notEqual(zygoteSpecFor(warm, mounted, layout.masks)?.key, spec?.key);
});
