import { PlatformError } from '../core/errors.js';

/** The sandbox cannot be used on this host (a missing binary, a bad setting); the message names the fix. */
export class SandboxUnavailableError extends PlatformError {
  constructor(message: string) {
    super('sandbox_unavailable', message);
    this.name = 'SandboxUnavailableError';
  }
}
