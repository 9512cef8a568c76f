import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isDomainError } from './errors.js';
import { isValidNamespaceName, toIdentifier, validateEntityName, validateNamespaceName } from './names.js';

test('namespace names follow the guide: lowercase alphanumeric and hyphens, 1-63, alphanumeric ends', () => {
  for (const good of ['a', 'demo', 'my-ns', 'a1', '0', 'x'.repeat(63), 'a-b-c']) assert.equal(isValidNamespaceName(good), true, good);
  for (const bad of ['', '-a', 'a-', 'A', 'my_ns', 'my ns', 'x'.repeat(64), 'a.b', 'ünï']) assert.equal(isValidNamespaceName(bad), false, bad);
});

test('a bad namespace name is a validation error naming the rule', () => {
  assert.throws(
    () => validateNamespaceName('Bad'),
    (e: unknown) => isDomainError(e) && e.type === 'validation_error' && /1-63 lowercase/.test(e.message),
  );
  assert.throws(() => validateNamespaceName(42), (e: unknown) => isDomainError(e) && e.type === 'validation_error');
});

test('service and function names become identifiers and tool names', () => {
  for (const good of ['utils', 'is-prime', 'hello_world', 'a', 'f2', 'x'.repeat(31)]) assert.equal(validateEntityName('function', good), good);
  for (const bad of ['', '2fast', '-a', 'a-', 'a__b', 'A', 'x'.repeat(32), 'a b', 'a--b', 'class', 'import', 'return', 'constructor', 'prototype']) {
    assert.throws(() => validateEntityName('function', bad), (e: unknown) => isDomainError(e) && e.type === 'validation_error', bad);
  }
  assert.equal(toIdentifier('my-func-name'), 'my_func_name');
});
