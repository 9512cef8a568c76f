/**
 * A scan worker thread (see scan-pool.ts): parses one run's answer, redacts it and sends back
 * whether anything was found, with the redacted answer's JSON when something was. Runs at a
 * lower priority than the server's main thread, so scanning large answers cannot starve it.
 */
import { setPriority } from 'node:os';
import { parentPort } from 'node:worker_threads';
import { findingTypes, type Finding } from '../core/secret-scanner.js';
import { SecretScannerCache } from './scanner-cache.js';

export type ScanJob = { id: number; env: readonly string[]; text: string };
export type ScanReply = { id: number; types: string[]; text?: string } | { id: number; failed: true };

try {
  // On Linux the nice value is per thread: this lowers this worker only, not the server.
  setPriority(10);
} catch {
  // Not permitted here: the worker still runs off the main thread.
}

// Each worker keeps its own scanners (half of what one cache on the main thread held).
const scanners = new SecretScannerCache(32, 2 * 1024 * 1024);

parentPort!.on('message', ({ id, env, text }: ScanJob) => {
  let reply: ScanReply;
  try {
    const findings: Finding[] = [];
    const scanned = scanners.for(env).scanValue(JSON.parse(text), findings);
    reply = findings.length === 0 ? { id, types: [] } : { id, types: findingTypes(findings), text: JSON.stringify(scanned) };
  } catch {
    reply = { id, failed: true };
  }
  parentPort!.postMessage(reply);
});
