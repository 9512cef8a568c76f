#!/usr/bin/env node
import { describeError } from '../store/database.js';
import { main } from './commands.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`mcpworks: ${describeError(error)}\n`);
    process.exitCode = 1;
  },
);
