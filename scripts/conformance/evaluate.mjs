#!/usr/bin/env node
// Judges conformance runs against the known-failures list.
//
//   node scripts/conformance/evaluate.mjs KNOWN_FAILURES_FILE LABEL=RUN_DIR [LABEL=RUN_DIR ...]
//
// Each RUN_DIR holds `stdout.txt` (the runner's console output, which names every scenario it
// started) and `results/` (the runner's `-o` directory: one `server-<scenario>-<timestamp>/checks.json`
// per scenario). A scenario run passes when none of its checks has a failing status (WARNING, INFO
// and SKIPPED do not fail). A failing check is "known" when the list names its scenario
// (`scenario`) or the check itself (`scenario:check-id`).
//
// Exit status: 0 when every failure is known and every list entry still fails somewhere;
// 1 on an unexpected failure (a regression) or a stale entry (now passes: remove it); 2 on bad input.
// The last line printed is `conformance: N passed, N failed`, where "failed" counts unexpected
// failures and stale entries; known failures are counted on the line before it.
import fs from 'node:fs';
import path from 'node:path';

const NON_FAILING = new Set(['SUCCESS', 'WARNING', 'INFO', 'SKIPPED']);

function die(message) {
  console.error(`conformance evaluate: ${message}`);
  process.exit(2);
}

const [knownFile, ...runSpecs] = process.argv.slice(2);
if (!knownFile || runSpecs.length === 0) die('usage: evaluate.mjs KNOWN_FAILURES_FILE LABEL=RUN_DIR [...]');

/** @returns {{scenario: string, check?: string, reason: string, line: number, key: string}[]} */
function readKnown(file) {
  const entries = [];
  const seen = new Set();
  fs.readFileSync(file, 'utf8')
    .split('\n')
    .forEach((raw, index) => {
      const text = raw.trim();
      if (!text || text.startsWith('#')) return;
      const match = /^(\S+)\s+(.+)$/.exec(text);
      if (!match) die(`${file}:${index + 1}: an entry needs a reason after the name: ${JSON.stringify(text)}`);
      const [, key, reason] = match;
      const [scenario, check, extra] = key.split(':');
      if (!scenario || check === '' || extra !== undefined) die(`${file}:${index + 1}: bad entry name ${JSON.stringify(key)}`);
      if (seen.has(key)) die(`${file}:${index + 1}: duplicate entry ${key}`);
      seen.add(key);
      entries.push({ scenario, check, reason, line: index + 1, key });
    });
  for (const e of entries) {
    if (e.check && seen.has(e.scenario)) die(`${file}:${e.line}: ${e.key} is redundant with the whole-scenario entry ${e.scenario}`);
  }
  return entries;
}

const STAMP = /-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/;

function readRun(label, dir) {
  const stdoutPath = path.join(dir, 'stdout.txt');
  const stdout = fs.existsSync(stdoutPath) ? fs.readFileSync(stdoutPath, 'utf8') : '';
  const started = [...stdout.matchAll(/^=== Running scenario: (\S+) ===$/gm)].map((m) => m[1]);
  const resultsDir = path.join(dir, 'results');
  /** @type {Map<string, {status: string, id: string, errorMessage?: string}[]>} */
  const checks = new Map();
  for (const name of fs.existsSync(resultsDir) ? fs.readdirSync(resultsDir) : []) {
    if (!name.startsWith('server-') || !STAMP.test(name)) continue;
    const scenario = name.slice('server-'.length).replace(STAMP, '');
    const file = path.join(resultsDir, name, 'checks.json');
    let list;
    try {
      list = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (error) {
      list = [{ id: '(checks.json)', status: 'FAILURE', errorMessage: `unreadable ${file}: ${error.message}` }];
    }
    checks.set(scenario, [...(checks.get(scenario) ?? []), ...list]);
  }
  const scenarios = [...new Set([...started, ...checks.keys()])];
  if (scenarios.length === 0) die(`run ${label}: no scenario ran (see ${stdoutPath})`);
  return scenarios.map((scenario) => {
    const list = checks.get(scenario);
    if (!list)
      return {
        label,
        scenario,
        checks: [],
        failing: [
          { id: '(no result)', status: 'FAILURE', errorMessage: 'the runner saved no checks.json for this scenario (crash or timeout?)' },
        ],
      };
    return { label, scenario, checks: list, failing: list.filter((c) => !NON_FAILING.has(String(c.status))) };
  });
}

const known = readKnown(knownFile);
const runs = runSpecs.map((spec) => {
  const eq = spec.indexOf('=');
  if (eq <= 0) die(`bad run spec ${JSON.stringify(spec)} (want LABEL=DIR)`);
  return { label: spec.slice(0, eq), results: readRun(spec.slice(0, eq), spec.slice(eq + 1)) };
});

function entryFor(scenario, checkId) {
  return known.find((e) => e.scenario === scenario && (!e.check || e.check === checkId));
}

const used = new Set();
let passed = 0;
let knownFailed = 0;
const unexpected = [];

for (const run of runs) {
  console.log(`\n--- conformance pass ${run.label}: ${run.results.length} scenarios ---`);
  for (const r of run.results) {
    const total = r.checks.length;
    if (r.failing.length === 0) {
      passed++;
      console.log(`  ok       ${r.scenario} (${total} checks)`);
      continue;
    }
    const unknown = [];
    const reasons = new Set();
    for (const c of r.failing) {
      const entry = entryFor(r.scenario, c.id);
      if (entry) {
        used.add(entry.key);
        reasons.add(entry.reason);
      } else {
        unknown.push(c);
      }
    }
    if (unknown.length === 0) {
      knownFailed++;
      console.log(`  known    ${r.scenario} (${r.failing.length}/${total} checks fail): ${[...reasons].join('; ')}`);
    } else {
      unexpected.push(`${run.label} ${r.scenario}`);
      console.log(`  FAILED   ${r.scenario} (${r.failing.length}/${total} checks fail, ${unknown.length} not on the known-failures list)`);
      for (const c of unknown)
        console.log(`             ${c.id} [${c.status}]: ${(c.errorMessage ?? '').replace(/\s+/g, ' ').slice(0, 400)}`);
    }
  }
}

const stale = known.filter((e) => !used.has(e.key));
console.log('');
if (unexpected.length > 0) {
  console.log(`conformance: ${unexpected.length} unexpected failure(s), not on ${knownFile}:`);
  for (const u of unexpected) console.log(`  - ${u}`);
}
if (stale.length > 0) {
  console.log(
    `conformance: ${stale.length} stale known-failures entr${stale.length === 1 ? 'y' : 'ies'} (no longer failing in any pass: remove from ${knownFile}):`,
  );
  for (const e of stale) console.log(`  - ${e.key} (line ${e.line})`);
}
const scenarioRuns = runs.reduce((n, r) => n + r.results.length, 0);
console.log(
  `conformance: ${scenarioRuns} scenario runs in ${runs.length} pass(es): ${passed} passed, ${knownFailed} known failures (listed), ` +
    `${unexpected.length} unexpected failures, ${stale.length} stale entries`,
);
console.log(`conformance: ${passed} passed, ${unexpected.length + stale.length} failed`);
process.exit(unexpected.length + stale.length > 0 ? 1 : 0);
