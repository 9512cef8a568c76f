// test-database: embedded, the subject is the server's worker processes, not the database
// MCPWORKS_SANDBOX_CPU_WEIGHT=idle reaches the schema workers as well as the runs' CPU group
// (src/sandbox/host/cgroup.host.test.ts and the escape suite check the group): a server started
// with it checks a tenant's schema in workers under SCHED_IDLE; by default they are niced only.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { startTestServer, type TestServer } from '../test-support/harness.js';
import { makeSpace } from '../test-support/spaces.js';
import { SANDBOX_DEFAULTS } from './config.js';
import { schedIdleHere, schedulingPolicy, schemaWorkers } from '../test-support/processes.js';
import { instanceCpuGroup } from '../test-support/cpu-groups.js';

const servers: TestServer[] = [];
after(async () => {
  for (const server of servers) await server.stop();
});

/** Each schema worker process under this test process, with its threads' scheduling policies. */
function schemaWorkerPolicies(): Map<number, number[]> {
  const workers = new Map<number, number[]>();
  for (const pid of schemaWorkers()) {
    try {
      workers.set(
        pid,
        readdirSync(`/proc/${pid}/task`).map((tid) => schedulingPolicy(pid, tid)),
      );
    } catch {
      // ended meanwhile
    }
  }
  return workers;
}

test('with MCPWORKS_SANDBOX_CPU_WEIGHT=idle the schema workers run under SCHED_IDLE; by default they do not', async () => {
  const idleHere = schedIdleHere();
  for (const [cpuIdle, expected] of [
    [false, 0],
    [true, idleHere],
  ] as const) {
    const before = new Set(schemaWorkerPolicies().keys());
    const server = await startTestServer({ sandbox: { ...SANDBOX_DEFAULTS, cpuIdle } });
    servers.push(server);
    // Creating a function compiles its schema in a worker: the pool starts.
    const space = await makeSpace(
      server,
      [
        {
          name: 'f',
          code: 'def main(input_data):\n    return {"n": 1}\n',
          input_schema: { type: 'object', properties: { n: { type: 'integer' } } },
        },
      ],
      { prefix: `idle-${cpuIdle ? 'on' : 'off'}` },
    );
    await space.create.close();
    // And the runs' CPU group (the escape and cgroup suites read it too): idle where asked for and
    // the kernel has cpu.idle.
    const group = instanceCpuGroup();
    if (group && existsSync(join(group, 'cpu.idle')))
      assert.equal(readFileSync(join(group, 'cpu.idle'), 'utf8').trim(), cpuIdle ? '1' : '0', `cpuIdle ${cpuIdle}: the runs' CPU group`);
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
