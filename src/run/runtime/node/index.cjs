// The generated `functions` package of MCPWorks code mode (CommonJS face). This file is static:
// names, descriptions, schemas and code come from _catalog.json and _code/ as data.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const catalog = JSON.parse(fs.readFileSync(path.join(__dirname, '_catalog.json'), 'utf8'));

class FunctionError extends Error {
  constructor(errorType, message) {
    super(message);
    this.name = errorType === 'SchemaError' ? 'InputValidationError' : 'FunctionError';
    this.errorType = errorType;
  }
}

function bridge(message) {
  // Provided by the sandbox runner: a blocking request/answer channel to the host.
  const call = globalThis.__mcpworksBridge;
  if (typeof call !== 'function') throw new Error('functions can only be called inside an MCPWorks execute run');
  return call(message);
}

async function runLocal(entry, input) {
  const exported = require(path.join(__dirname, '_code', entry.file));
  const main = globalThis.__mcpworksPickEntry(exported);
  if (!main) throw new TypeError(`${entry.service}.${entry.name} has no main function`);
  return main(input);
}

function wrapper(entry) {
  const call = async (input = {}) => {
    if (input === null || typeof input !== 'object' || Array.isArray(input)) {
      throw new TypeError(`${entry.identifier}() takes one input object`);
    }
    let answer;
    try {
      answer = bridge({ op: 'call', service: entry.service, function: entry.name, input });
    } catch (error) {
      // One rule in both languages: an input that is not JSON (NaN, a BigInt, a cycle) is a SerializationError.
      if (!(error instanceof TypeError)) throw error;
      throw new FunctionError(
        'SerializationError',
        `the input of ${entry.service}.${entry.name} is not JSON-serialisable: ${error.message}`,
      );
    }
    if (!answer.ok) throw new FunctionError(answer.error_type || 'Error', answer.error || 'the function failed');
    if (Object.prototype.hasOwnProperty.call(answer, 'result')) return answer.result;
    const produced = await runLocal(entry, input);
    if (answer.check) {
      // The function has an output_schema: the host checks the result, as it does in tool mode.
      let verdict;
      try {
        verdict = bridge({ op: 'result', service: entry.service, function: entry.name, result: produced === undefined ? null : produced });
      } catch (error) {
        if (!(error instanceof TypeError)) throw error;
        throw new FunctionError(
          'SerializationError',
          `the result of ${entry.service}.${entry.name} is not JSON-serialisable: ${error.message}`,
        );
      }
      if (!verdict.ok) {
        const refused = new FunctionError(verdict.error_type || 'Error', verdict.error || 'the result was refused');
        refused.name = 'FunctionError'; // a result that fails output_schema is no input's fault
        throw refused;
      }
    }
    return produced;
  };
  Object.defineProperty(call, 'name', { value: entry.identifier });
  call.__doc__ = entry.typescriptSignature + (entry.description ? `\n\n${entry.description}` : '');
  return call;
}

// Prototype-less maps: no name can reach Object.prototype's members.
const services = Object.create(null);
const ambiguous = new Set(catalog.ambiguous);
const exported = { __doc__: catalog.doc.typescript, FunctionError };
for (const entry of catalog.functions) {
  if (!Object.hasOwn(services, entry.serviceIdentifier)) {
    services[entry.serviceIdentifier] = Object.assign(Object.create(null), { __doc__: `Functions of service "${entry.service}".` });
  }
  const service = services[entry.serviceIdentifier];
  const fn = wrapper(entry);
  service[entry.identifier] = fn;
  if (!ambiguous.has(entry.identifier)) exported[entry.identifier] = fn;
}
Object.assign(exported, services);
exported.__services = services;
module.exports = exported;
