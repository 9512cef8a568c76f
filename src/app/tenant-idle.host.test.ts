// test-database: embedded, the subject is the server's worker processes, not the database
// MCPWORKS_SANDBOX_CPU_WEIGHT=idle reaches the schema workers as well as the runs' CPU group
// (src/sandbox/host/cgroup.host.test.ts and the escape suite check the group): a server started
// with it checks a tenant's schema in workers under SCHED_IDLE; by default they are niced only.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { callOk, connect, createAccount, startTestServer, type TestServer } from '../test-support/harness.js';
import { SANDBOX_DEFAULTS } from './config.js';

const servers: TestServer[] = [];
after(async () => {
  for (const server of servers) await server.stop();
});

/** Each schema worker process under this test process, with its threads' scheduling policies (0 SCHED_OTHER, 5 SCHED_IDLE). */
function schemaWorkerPolicies(): Map<number, number[]> {
  const workers = new Map<number, number[]>();
  for (const task of readdirSync(`/proc/${process.pid}/task`)) {
    for (const pid of readFileSync(`/proc/${process.pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)) {
      try {
        if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('schema-worker.mjs')) continue;
        workers.set(
          pid,
          readdirSync(`/proc/${pid}/task`).map((tid) => {
            const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
            return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]);
          }),
        );
      } catch {
        // ended meanwhile
      }
    }
  }
  return workers;
}

test('with MCPWORKS_SANDBOX_CPU_WEIGHT=idle the schema workers run under SCHED_IDLE; by default they do not', async () => {
  const idleHere = spawnSync('/usr/bin/chrt', ['--idle', '0', '/bin/true']).status === 0 ? 5 : 0;
  for (const [cpuIdle, expected] of [
    [false, 0],
    [true, idleHere],
  ] as const) {
    const before = new Set(schemaWorkerPolicies().keys());
    const server = await startTestServer({ sandbox: { ...SANDBOX_DEFAULTS, cpuIdle } });
    servers.push(server);
    const account = await createAccount(server.url);
    const ns = `idle-${cpuIdle ? 'on' : 'off'}-${Math.random().toString(36).slice(2, 8)}`;
    const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    await callOk(create, 'make_namespace', { name: ns });
    await callOk(create, 'make_service', { name: 's' });
    // Creating a function compiles its schema in a worker: the pool starts.
    await callOk(create, 'make_function', {
      service: 's',
      name: 'f',
      code: 'def main(input_data):\n    return {"n": 1}\n',
      input_schema: { type: 'object', properties: { n: { type: 'integer' } } },
    });
    await create.close();
    let workers: Array<[number, number[]]> = [];
    for (const deadline = Date.now() + 30_000; Date.now() < deadline;) {
      workers = [...schemaWorkerPolicies()].filter(([pid]) => !before.has(pid));
      if (workers.length > 0) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(workers.length > 0, `cpuIdle ${cpuIdle}: this server's schema workers found`);
    for (const [pid, policies] of workers) assert.deepEqual(new Set(policies), new Set([expected]), `cpuIdle ${cpuIdle}: worker ${pid}`);
    await server.stop();
    servers.pop();
  }
});
