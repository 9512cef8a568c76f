/**
 * The command frame a pre-started helper (`exec --wait-command`) reads on its stdin when its run
 * begins: eight hex digits giving the body's length, then each argument followed by a NUL byte.
 * Decoded by `read_command` in native/mcpworks-sandbox-helper.c, which refuses a body that is
 * empty or larger than MAX_FRAME_BYTES; keep the two in step.
 */

/** The C decoder's limit (read_command: `size > (1u << 20)`). */
export const MAX_FRAME_BYTES = 1 << 20;

export function encodeCommandFrame(args: readonly string[]): Buffer {
  const body = Buffer.from(args.map((arg) => `${arg}\0`).join(''), 'utf8');
  return Buffer.concat([Buffer.from(body.length.toString(16).padStart(8, '0'), 'ascii'), body]);
}

/** The arguments of a frame, as read_command reads them; null where it would refuse it. For tests. */
export function decodeCommandFrame(frame: Buffer): string[] | null {
  if (frame.length < 8) return null;
  const header = frame.subarray(0, 8).toString('ascii');
  // strtoul: leading hex digits; anything else ends the number.
  const size = Number.parseInt(/^[0-9a-fA-F]*/.exec(header)![0] || '0', 16);
  if (size === 0 || size > MAX_FRAME_BYTES || frame.length < 8 + size) return null;
  const body = frame.subarray(8, 8 + size);
  const args: string[] = [];
  // Only NUL-terminated arguments count: read_command makes as many as there are NULs.
  for (let start = 0, end = body.indexOf(0); end !== -1; start = end + 1, end = body.indexOf(0, start)) {
    args.push(body.subarray(start, end).toString('utf8'));
  }
  return args;
}
