import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { MountViews } from './mount-views.js';

test('one mirror per directory, however often it is marked used; a directory made anew gets a new one', () => {
  const root = mkdtempSync(path.join(tmpdir(), 'mount-views-'));
  try {
    const source = path.join(root, 'package');
    mkdirSync(path.join(source, 'functions'), { recursive: true });
    writeFileSync(path.join(source, 'functions', 'code.py'), 'v = 1\n');
    const views = new MountViews(path.join(root, 'views'));
    const first = views.viewOf(source);
    assert.equal(readFileSync(path.join(first, 'functions', 'code.py'), 'utf8'), 'v = 1\n');
    // Every run marks its package used (utimes, which also changes ctime): same mirror, so the same
    // zygote and pool shape serve the next run.
    const later = new Date(Date.now() + 60_000);
    utimesSync(source, later, later);
    assert.equal(views.viewOf(source), first);
    // Collected and built again under the same name: a different directory, a new mirror.
    rmSync(source, { recursive: true });
    mkdirSync(path.join(source, 'functions'), { recursive: true });
    writeFileSync(path.join(source, 'functions', 'code.py'), 'v = 2\n');
    const rebuilt = views.viewOf(source);
    assert.notEqual(rebuilt, first);
    assert.equal(readFileSync(path.join(rebuilt, 'functions', 'code.py'), 'utf8'), 'v = 2\n');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
