/**
 * A JSON value still as UTF-8 text: a large run answer travels from the sandbox's channel to the
 * reply as bytes, parsed, scanned and rendered in a worker thread (src/run/scan-pool.ts), so that
 * the server's main thread never parses or serialises it.
 */
export class RawJson {
  constructor(readonly bytes: Buffer) {}

  /** The value itself; costs a parse on the calling thread (only where a value is unavoidable). */
  parse(): unknown {
    return JSON.parse(this.bytes.toString('utf8'));
  }
}

/**
 * A run's tool result rendered off the main thread: each content text and the structured content
 * as the JSON bytes they take in the MCP answer (a text as its JSON string literal, structured
 * content as its object), spliced into the answer after the MCP layer has framed it.
 */
export interface RenderedToolResult {
  isError: boolean;
  /** JSON string literals of the content texts, in order. */
  texts: Buffer[];
  /** The JSON of structuredContent, when the call sends one. */
  structured?: Buffer;
  /**
   * The result as its run's history keeps it (recordedResult of the structured content's JSON, else
   * of the texts joined by newlines), made where it was rendered: the main thread then never turns
   * a large answer's bytes back into text to keep 64 KB of it.
   */
  recorded?: string;
}
