/** The sandbox cannot be used on this host (a missing binary, a bad setting); the message names the fix. */
export class SandboxUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SandboxUnavailableError';
  }
}
