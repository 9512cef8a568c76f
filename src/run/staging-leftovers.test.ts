// Leftovers of a crash in the package cache (issue 11): staging dirs name the process that made
// them, so one whose process has ended on this host goes at the next sweep (the first runs at
// start), whatever its age; others' (alive, or made elsewhere) keep their grace period.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { madeByDeadProcess, ownerTag } from '../sandbox/owner-tag.js';
import { FunctionsPackageBuilder } from './functions-package.js';

test("a staging dir of a process that ended is removed at once; a live process's and another host's stay", () => {
  const root = mkdtempSync(path.join(tmpdir(), 'mcpworks-staging-'));
  try {
    const deadPid = spawnSync('/bin/true').pid!;
    const tag = ownerTag();
    const hostPart = tag.slice(0, tag.indexOf('p'));
    const names = {
      dead: `.staging-${hostPart}p${deadPid}-abc-1234`,
      alive: `.staging-${tag}-abc-5678`,
      elsewhere: `.staging-h00000000p${deadPid}-abc-9abc`,
      untagged: '.staging-abc-def0',
    };
    for (const name of Object.values(names)) mkdirSync(path.join(root, 'packages', name), { recursive: true });
    assert.equal(madeByDeadProcess(names.dead), true);
    assert.equal(madeByDeadProcess(names.alive), false);
    new FunctionsPackageBuilder(root).collectGarbage(new Set(), 3_600_000);
    assert.equal(existsSync(path.join(root, 'packages', names.dead)), false, "the dead process's staging dir is gone");
    for (const kept of [names.alive, names.elsewhere, names.untagged])
      assert.equal(existsSync(path.join(root, 'packages', kept)), true, `${kept} keeps its grace`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
