// TypeScript requirements: a real npm install at build time, then a real sandbox run that imports it.
import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  utimesSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sandboxLimitsFor, type Sandbox } from '../core/sandbox.js';
import { limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox } from './bubblewrap.js';
import { DependencyInstallError, dependencyKey, NPM_DEFAULTS, prepareTypescriptDependencies } from './npm-build.js';
import { startFakeRegistry, type FakeRegistry } from '../test-support/fake-npm-registry.js';

let cacheRoot: string;
let sandbox: Sandbox;
let registry: FakeRegistry;

before(async () => {
  cacheRoot = mkdtempSync(join(tmpdir(), 'mcpworks-npm-test-'));
  chmodSync(cacheRoot, 0o755);
  sandbox = createBubblewrapSandbox({ network: false });
  registry = await startFakeRegistry({
    stall: (name) => name.startsWith('stall-'),
    huge: (name) => name.startsWith('huge-'),
    hugeBytes: 24 * 1024 * 1024,
  });
});
after(async () => {
  rmSync(cacheRoot, { recursive: true, force: true });
  await sandbox.close();
  await registry.close();
});

const installsIn = (root: string): string[] => (existsSync(join(root, 'ts-deps')) ? readdirSync(join(root, 'ts-deps')).sort() : []);

/** npm processes working in a staging dir under `root`. */
function npmProcesses(root: string): string[] {
  return readdirSync('/proc')
    .filter((pid) => /^\d+$/.test(pid))
    .filter((pid) => {
      try {
        return readlinkSync(`/proc/${pid}/cwd`).startsWith(join(root, 'ts-deps', '.staging-'));
      } catch {
        return false;
      }
    });
}

async function expectInstallError(promise: Promise<unknown>, reason: string): Promise<DependencyInstallError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof DependencyInstallError, String(error));
    assert.equal(error.data.reason, reason, `${error.message}\n${error.data.detail}`);
    return error;
  }
  assert.fail('expected a DependencyInstallError');
}

describe('TypeScript requirements', () => {
  it('installs at build time, and a run imports the package from its read-only node_modules', async () => {
    const prepared = await prepareTypescriptDependencies(['is-odd@3.0.1'], cacheRoot);
    assert.ok(prepared.dir && existsSync(join(prepared.dir, 'is-odd', 'package.json')));
    // is-odd's own dependency came along.
    assert.ok(existsSync(join(prepared.dir, 'is-number')));
    const code =
      'import isOdd from "is-odd";\nimport { writeFileSync } from "node:fs";\nexport default function main(input: { n: number }) {\n  let write = "allowed";\n  try { writeFileSync("/function/node_modules/is-odd/index.js", ""); } catch (e: any) { write = e.code; }\n  return { odd: isOdd(input.n), write };\n}\n';
    const outcome = await sandbox.run({
      language: 'typescript',
      code,
      input: { n: 7 },
      limits: sandboxLimitsFor(limitsFor('pro')),
      nodeModulesDir: prepared.dir,
    });
    assert.equal(outcome.ok, true, JSON.stringify(outcome));
    assert.deepEqual((outcome as { result: unknown }).result, { odd: true, write: 'EROFS' });
  });

  it('is content-addressed: the same list in any order reuses one install without npm', async () => {
    const first = await prepareTypescriptDependencies(['is-odd@3.0.1', 'is-number@6.0.0'], cacheRoot);
    const started = Date.now();
    const second = await prepareTypescriptDependencies(['is-number@6.0.0', ' is-odd@3.0.1 '], cacheRoot, { npm: '/nonexistent/npm' });
    assert.equal(second.dir, first.dir);
    assert.equal(second.key, dependencyKey(['is-number@6.0.0', 'is-odd@3.0.1']));
    // The missing npm is what shows no install ran; the time only that nothing slow did (100 ms was
    // a bound a loaded host could miss for a few file checks).
    assert.ok(Date.now() - started < 2000);
    assert.notEqual(first.key, dependencyKey(['is-odd@3.0.0']));
  });

  it('a server with umask 077 still installs packages the sandbox user can read', async () => {
    const previous = process.umask(0o077);
    let prepared;
    try {
      prepared = await prepareTypescriptDependencies(['is-number@7.0.0'], cacheRoot);
    } finally {
      process.umask(previous);
    }
    const code = 'import isNumber from "is-number";\nexport default () => isNumber(5);\n';
    const outcome = await sandbox.run({
      language: 'typescript',
      code,
      input: {},
      limits: sandboxLimitsFor(limitsFor('pro')),
      nodeModulesDir: prepared.dir!,
    });
    assert.deepEqual(outcome.ok && outcome.result, true, JSON.stringify(outcome));
  });

  it('no requirements → no directory', async () => {
    assert.equal((await prepareTypescriptDependencies([], cacheRoot)).dir, null);
  });

  it("an unknown package fails with npm's reason and leaves nothing behind", async () => {
    const before = readdirSync(join(cacheRoot, 'ts-deps')).sort();
    const error = await expectInstallError(prepareTypescriptDependencies(['mcpworks-no-such-package-7f3a9c'], cacheRoot), 'install_failed');
    assert.match(error.message, /E404/);
    assert.match(error.data.detail, /404 Not Found/);
    assert.ok(!error.data.detail.includes(cacheRoot), 'npm output must not name host paths');
    assert.deepEqual(readdirSync(join(cacheRoot, 'ts-deps')).sort(), before);
  });

  it('a version that does not exist fails with ETARGET', async () => {
    const error = await expectInstallError(prepareTypescriptDependencies(['is-odd@99.99.99'], cacheRoot), 'install_failed');
    assert.match(error.message, /ETARGET|No matching version/);
  });

  it('refuses git, file, URL and alias specs before running npm', async () => {
    for (const spec of [
      'git+https://github.com/a/b.git',
      'file:../evil',
      'x@file:../evil',
      'x@https://evil.example/x.tgz',
      'x@npm:lodash',
      '../escape',
      'UPPER',
    ]) {
      await expectInstallError(prepareTypescriptDependencies([spec], cacheRoot), 'invalid_requirement');
    }
  });

  it('refuses a cache the sandbox user could not read', async () => {
    const hidden = mkdtempSync(join(tmpdir(), 'mcpworks-npm-hidden-'));
    try {
      await expectInstallError(prepareTypescriptDependencies(['is-odd@3.0.1'], join(hidden, 'cache')), 'cache_unreadable');
    } finally {
      rmSync(hidden, { recursive: true, force: true });
    }
  });

  describe('npm under limits (fake registry on loopback)', () => {
    const isRoot = process.getuid?.() === 0;

    it("a finished install belongs to the server's user and is read-only to others; npm's home is npm's own", async () => {
      const root = mkdtempSync(join(tmpdir(), 'mcpworks-npm-owner-'));
      chmodSync(root, 0o755);
      try {
        const prepared = await prepareTypescriptDependencies(['owned-pkg@1.0.0'], root, { registry: registry.url });
        const walk = (dir: string): string[] =>
          readdirSync(dir).flatMap((name) => {
            const path = join(dir, name);
            return lstatSync(path).isDirectory() ? [path, ...walk(path)] : [path];
          });
        const final = join(prepared.dir!, '..');
        for (const path of [final, ...walk(final)]) {
          const stat = lstatSync(path);
          assert.equal(stat.uid, process.getuid!(), path);
          assert.equal(stat.mode & 0o022, 0, `${path} is writable by others`);
        }
        assert.equal(readFileSync(join(prepared.dir!, 'owned-pkg', 'index.js'), 'utf8'), 'module.exports = "owned-pkg";\n');
        const home = statSync(join(root, 'npm-home'));
        assert.equal(home.mode & 0o777, 0o700);
        if (isRoot) assert.equal(home.uid, NPM_DEFAULTS.user.uid);
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    });

    it('two servers installing the same list into one cache at once: one intact install, no staging left', async () => {
      const root = mkdtempSync(join(tmpdir(), 'mcpworks-npm-shared-'));
      chmodSync(root, 0o755);
      try {
        const [one, two] = await Promise.all([
          prepareTypescriptDependencies(['shared-pkg@1.0.0'], root, { registry: registry.url }),
          prepareTypescriptDependencies(['shared-pkg@1.0.0'], root, { registry: registry.url }),
        ]);
        assert.equal(one.dir, two.dir);
        assert.deepEqual(readdirSync(join(root, 'ts-deps')), [one.key]);
        assert.equal(readFileSync(join(one.dir!, 'shared-pkg', 'index.js'), 'utf8'), 'module.exports = "shared-pkg";\n');
        const outcome = await sandbox.run({
          language: 'typescript',
          code: 'import v from "shared-pkg";\nexport default () => v;\n',
          input: {},
          limits: sandboxLimitsFor(limitsFor('pro')),
          nodeModulesDir: one.dir!,
        });
        assert.deepEqual(outcome.ok && outcome.result, 'shared-pkg', JSON.stringify(outcome));
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    });

    it('a staging dir left by a dead server is removed; a fresh one (another server at work) is kept', async () => {
      const installs = join(cacheRoot, 'ts-deps');
      mkdirSync(join(installs, '.staging-dead-1'), { recursive: true });
      mkdirSync(join(installs, '.staging-alive-1'), { recursive: true });
      const old = new Date(Date.now() - 2 * 60 * 60_000);
      utimesSync(join(installs, '.staging-dead-1'), old, old);
      await prepareTypescriptDependencies(['stale-check@1.0.0'], cacheRoot, { registry: registry.url });
      assert.ok(!existsSync(join(installs, '.staging-dead-1')));
      assert.ok(existsSync(join(installs, '.staging-alive-1')));
      rmSync(join(installs, '.staging-alive-1'), { recursive: true });
    });

    for (const cgroups of [true, false]) {
      const how = cgroups ? 'in its cgroup' : 'with rlimits only';
      it(
        `metadata too big for the memory limit → out of memory, typed, nothing installed (${how}); a small package fits`,
        { timeout: 120_000 },
        async () => {
          const limits = { registry: registry.url, cgroups, memoryBytes: 96 * 1024 * 1024 };
          const before = installsIn(cacheRoot);
          const error = await expectInstallError(
            prepareTypescriptDependencies([`huge-${cgroups}@1.0.0`], cacheRoot, limits),
            'limit_exceeded',
          );
          assert.equal(error.data.limit, 'memory');
          assert.equal(
            error.message,
            `npm install of huge-${cgroups}@1.0.0 ran out of memory (the install memory limit is 96 MB); nothing was installed`,
          );
          assert.deepEqual(installsIn(cacheRoot), before);
          assert.ok((await prepareTypescriptDependencies([`small-${cgroups}@1.0.0`], cacheRoot, limits)).dir);
        },
      );

      it(`a stalled registry → stopped at the time limit, no npm process left (${how})`, { timeout: 60_000 }, async () => {
        const before = installsIn(cacheRoot);
        const error = await expectInstallError(
          prepareTypescriptDependencies([`stall-${cgroups}`], cacheRoot, { registry: registry.url, cgroups, timeoutMs: 2000 }),
          'limit_exceeded',
        );
        assert.equal(error.data.limit, 'timeout');
        assert.equal(
          error.message,
          `npm install of stall-${cgroups}@latest did not finish within 2 s (the install time limit); nothing was installed`,
        );
        assert.deepEqual(npmProcesses(cacheRoot), []);
        assert.deepEqual(installsIn(cacheRoot), before);
      });
    }
  });
});
