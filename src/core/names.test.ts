import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isDomainError } from './errors.js';
import {
  CLIENT_SERVER_NAME_MAX,
  functionNameRoom,
  isValidNamespaceName,
  toIdentifier,
  TOOL_NAME_BUDGET,
  toolName,
  validateEntityName,
  validateNamespaceName,
  validateToolNameBudget,
} from './names.js';

test('namespace names follow the guide: lowercase alphanumeric and hyphens, 1-63, alphanumeric ends', () => {
  for (const good of ['a', 'demo', 'my-ns', 'a1', '0', 'x'.repeat(63), 'a-b-c']) assert.equal(isValidNamespaceName(good), true, good);
  for (const bad of ['', '-a', 'a-', 'A', 'my_ns', 'my ns', 'x'.repeat(64), 'a.b', 'ünï'])
    assert.equal(isValidNamespaceName(bad), false, bad);
});

test('a bad namespace name is a validation error naming the rule', () => {
  assert.throws(
    () => validateNamespaceName('Bad'),
    (e: unknown) => isDomainError(e) && e.type === 'validation_error' && /1-63 lowercase/.test(e.message),
  );
  assert.throws(
    () => validateNamespaceName(42),
    (e: unknown) => isDomainError(e) && e.type === 'validation_error',
  );
});

test('service and function names become identifiers and tool names', () => {
  for (const good of ['utils', 'is-prime', 'hello_world', 'a', 'f2', 'x'.repeat(31)])
    assert.equal(validateEntityName('function', good), good);
  for (const bad of [
    '',
    '2fast',
    '-a',
    'a-',
    'a__b',
    'A',
    'x'.repeat(32),
    'a b',
    'a--b',
    'class',
    'import',
    'return',
    'constructor',
    'prototype',
  ]) {
    assert.throws(
      () => validateEntityName('function', bad),
      (e: unknown) => isDomainError(e) && e.type === 'validation_error',
      bad,
    );
  }
  assert.equal(toIdentifier('my-func-name'), 'my_func_name');
});

test("tool names stay within the documented budget, so Claude Code's mcp__{server}__ prefix still fits in 64", () => {
  assert.equal(TOOL_NAME_BUDGET, 40);
  assert.equal(CLIENT_SERVER_NAME_MAX, 17);
  assert.ok(`mcp__${'s'.repeat(CLIENT_SERVER_NAME_MAX)}__`.length + TOOL_NAME_BUDGET <= 64);
  // At the budget: accepted and listed as it is.
  validateToolNameBudget('s'.repeat(20), 'f'.repeat(18));
  assert.equal(toolName({ service: 'utils', name: 'hello' }), 'utils__hello');
  assert.equal(toolName({ service: 's'.repeat(20), name: 'f'.repeat(18) }).length, 40);
  // One over: refused, saying by how much and what fits (the 73-character sample setup had 31 + 2 + 31).
  assert.throws(
    () => validateToolNameBudget('s'.repeat(20), 'f'.repeat(19)),
    (e: unknown) =>
      isDomainError(e) &&
      e.type === 'validation_error' &&
      /would be 41 characters/.test(e.message) &&
      /at most 18 characters/.test(e.message) &&
      e.details?.max_function_name === 18,
  );
  assert.throws(
    () => validateToolNameBudget('s'.repeat(31), 'f'.repeat(31)),
    (e: unknown) => isDomainError(e) && /would be 64 characters/.test(e.message),
  );
  assert.equal(functionNameRoom('utils'), 31);
  assert.equal(functionNameRoom('s'.repeat(31)), 7);
  // Functions made before the budget: cut, with a hash of the full name, so still unique.
  const long = toolName({ service: 's'.repeat(31), name: 'f'.repeat(31) });
  const sibling = toolName({ service: 's'.repeat(31), name: `${'f'.repeat(30)}g` });
  assert.equal(long.length, 40);
  assert.match(long, /^s{14}__f{14}__[0-9a-f]{8}$/, 'both names stay readable');
  // Two `__`: no legal {service}__{function} (entity names hold none) can take a cut name.
  assert.equal(long.split('__').length, 3);
  assert.throws(() => validateEntityName('function', long.slice(16)));
  assert.match(long, /^[a-zA-Z0-9_-]{1,40}$/);
  assert.notEqual(long, sibling);
  assert.equal(toolName({ service: 's'.repeat(31), name: 'f'.repeat(31) }), long, 'stable');
});
