// A large answer whose scan worker is stopped after the answer's chunks were moved to it (here at a
// deadline it cannot meet) is withheld, never handed on unread: the run's outcome says the server
// could not read it. Zygote and cold sandboxes (Python), a cold one (TypeScript).
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { sandboxLimitsFor } from '../core/sandbox.js';
import { limitsFor } from '../core/tiers.js';
import { ScanPool } from '../run/scan-pool.js';
import { createBubblewrapSandbox } from './bubblewrap.js';

const limits = sandboxLimitsFor(limitsFor('pro'));
const stalled = new ScanPool({ workers: 1, deadlineMs: 1 });
const sandboxes = {
  zygote: createBubblewrapSandbox({ network: false, pool: false, answers: stalled }),
  cold: createBubblewrapSandbox({ network: false, zygote: false, pool: false, answers: stalled }),
};
after(async () => {
  await Promise.all(Object.values(sandboxes).map((sandbox) => sandbox.close()));
  await stalled.close();
});

describe('a large answer its scan worker could not read', () => {
  for (const [where, sandbox] of Object.entries(sandboxes)) {
    it(`${where}: withheld, the run failed with why`, async () => {
      const runs = [
        sandbox.run({ language: 'python', code: 'def main(input_data):\n    return {"text": "unread-" * 20000}\n', input: {}, limits }),
        ...(where === 'cold'
          ? [
              sandbox.run({
                language: 'typescript',
                code: 'export default function main() {\n  return { text: "unread-".repeat(20000) };\n}\n',
                input: {},
                limits,
              }),
            ]
          : []),
      ];
      for (const outcome of await Promise.all(runs)) {
        assert.equal(outcome.ok, false, JSON.stringify(outcome).slice(0, 300));
        assert.ok(
          !outcome.ok && outcome.error.message === "the server could not read the function's answer",
          JSON.stringify(outcome).slice(0, 300),
        );
        assert.doesNotMatch(JSON.stringify(outcome), /unread-/);
      }
    });
  }
});
