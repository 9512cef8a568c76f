/**
 * Output secret scanner: every string a run returns (result, logs, errors) passes through here
 * before it reaches the client. Known credential shapes and the exact values of the caller's env
 * variables (in the forms everyday code writes them: see envValueForms) become `[REDACTED_<TYPE>]`.
 * Linear in the output: env values through one Aho–Corasick pass, shapes through linear finders
 * and regexes that cannot backtrack quadratically.
 */
import { inspect } from 'node:util';
import { LiteralMatcher } from './literal-matcher.js';

export interface SecretPattern {
  /** Marker suffix: `[REDACTED_<marker>]`. */
  marker: string;
  pattern: RegExp;
  /** Capture group holding the secret when the match carries context (e.g. `aws_secret_access_key=`). */
  group?: number;
}

/**
 * Shapes a backtracking regex would scan in quadratic time on hostile output (many starts, no
 * end), found instead in one linear pass each.
 */
interface SecretFinder {
  marker: string;
  find(text: string): Array<[number, number]>;
}

const PEM_BEGIN = /-----BEGIN (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----/g;
const PEM_END = /-----END (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----/g;

/** Each BEGIN with the first END after it: two ordered lists walked together. */
function findPrivateKeys(text: string): Array<[number, number]> {
  if (!text.includes('PRIVATE KEY')) return [];
  const ends = [...text.matchAll(PEM_END)].map((m) => m.index! + m[0].length);
  const ranges: Array<[number, number]> = [];
  let next = 0;
  let from = 0;
  for (const begin of text.matchAll(PEM_BEGIN)) {
    if (begin.index! < from) continue;
    while (next < ends.length && ends[next]! <= begin.index! + begin[0].length) next++;
    if (next === ends.length) break;
    ranges.push([begin.index!, ends[next]!]);
    from = ends[next]!;
  }
  return ranges;
}

const WORD = /[A-Za-z0-9_]/;

/**
 * JWTs: header.payload.signature, header and payload starting `eyJ`. Runs of base64url and dots
 * are cut out first (linear), then split on dots and checked part by part.
 */
function findJwts(text: string): Array<[number, number]> {
  if (!text.includes('eyJ')) return [];
  const ranges: Array<[number, number]> = [];
  for (const run of text.matchAll(/[A-Za-z0-9_.-]{30,}/g)) {
    const parts = run[0].split('.');
    let offset = run.index!;
    const starts: number[] = [];
    for (const part of parts) {
      starts.push(offset);
      offset += part.length + 1;
    }
    for (let i = 0; i + 2 < parts.length; i++) {
      const header = parts[i]!;
      // The token starts at the first `eyJ` of the header part that follows a non-word character.
      let at = -1;
      for (let j = header.indexOf('eyJ'); j !== -1; j = header.indexOf('eyJ', j + 1)) {
        const before = j === 0 ? text[starts[i]! - 1] : header[j - 1];
        if (before === undefined || !WORD.test(before)) {
          at = j;
          break;
        }
      }
      const payload = parts[i + 1]!;
      const signature = parts[i + 2]!;
      if (at === -1 || header.length - at < 8 || !payload.startsWith('eyJ') || payload.length < 8 || signature.length < 10) continue;
      ranges.push([starts[i]! + at, starts[i + 2]! + signature.length]);
      i += 2;
    }
  }
  return ranges;
}

const SECRET_FINDERS: readonly SecretFinder[] = Object.freeze([
  { marker: 'PRIVATE_KEY', find: findPrivateKeys },
  { marker: 'JWT', find: findJwts },
]);

export const SECRET_PATTERNS: readonly SecretPattern[] = Object.freeze([
  {
    marker: 'CONNECTION_URI',
    pattern: /\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver):\/\/[^\s:@/'"]+:[^\s@/'"]+@[^\s'"<>]+/gi,
  },
  { marker: 'STRIPE_WEBHOOK', pattern: /\bwhsec_[A-Za-z0-9]{20,}/g },
  { marker: 'STRIPE_KEY', pattern: /\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}/g },
  // sk-proj-, sk-ant-api03-, sk-svcacct-, sk-admin-…: their prefixes are in the class already.
  { marker: 'API_KEY', pattern: /\bsk-[A-Za-z0-9_-]{20,}/g },
  { marker: 'AWS_KEY', pattern: /\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b/g },
  {
    marker: 'AWS_SECRET',
    pattern: /(aws_?secret_?(?:access_?)?key(?:_id)?["']?\s*[:=]\s*["']?)([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])/gi,
    group: 2,
  },
  { marker: 'GITHUB_TOKEN', pattern: /\b(?:ghp|gho|ghs|ghu|ghr)_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{22,}/g },
  { marker: 'GITLAB_TOKEN', pattern: /\bglpat-[A-Za-z0-9_-]{20,}/g },
  { marker: 'SLACK_TOKEN', pattern: /\bxox[abposr]-[A-Za-z0-9-]{10,}/g },
  // API keys, and the OAuth access and refresh tokens this server issues (mcpwat_, mcpwrt_).
  { marker: 'MCPWORKS_KEY', pattern: /\bmcpw(?:at|rt)?_[0-9a-f]{64}\b/g },
]);

/** Env values shorter than this are too common to redact without mangling ordinary output. */
export const MIN_ENV_VALUE_LENGTH = 8;

export interface Finding {
  /** e.g. STRIPE_KEY, ENV_VALUE. */
  type: string;
}

const hex2 = (n: number) => n.toString(16).padStart(2, '0');
const unicodeEscape = (unit: number) => `\\u${unit.toString(16).padStart(4, '0')}`;

/** What JSON.stringify (and json.dumps with ensure_ascii=False) makes of a string, quotes cut. */
function jsonInner(value: string): string {
  return JSON.stringify(value).slice(1, -1);
}

const JSON_SHORT_ESCAPES: Record<number, string> = {
  0x22: '\\"',
  0x5c: '\\\\',
  0x08: '\\b',
  0x0c: '\\f',
  0x0a: '\\n',
  0x0d: '\\r',
  0x09: '\\t',
};

/** What Python's json.dumps (ensure_ascii, its default) makes of a str: all but printable ASCII escaped. */
function pythonJsonInner(value: string): string {
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const unit = value.charCodeAt(i);
    const short = JSON_SHORT_ESCAPES[unit];
    if (short !== undefined) out += short;
    else if (unit < 0x20 || unit > 0x7e) out += unicodeEscape(unit);
    else out += value[i];
  }
  return out;
}

/** Python's str.isprintable beyond ASCII: the Other and Separator categories are not printable. */
const NOT_PRINTABLE = /[\p{C}\p{Z}]/u;

/** Python's repr() of a str, quotes cut (it picks double quotes for text with ' and no "). */
function pythonReprInner(value: string): string {
  const quote = value.includes("'") && !value.includes('"') ? '"' : "'";
  let out = '';
  for (const char of value) {
    const point = char.codePointAt(0)!;
    if (char === quote || char === '\\') out += `\\${char}`;
    else if (char === '\t') out += '\\t';
    else if (char === '\n') out += '\\n';
    else if (char === '\r') out += '\\r';
    else if (point < 0x20 || point === 0x7f) out += `\\x${hex2(point)}`;
    else if (point < 0x7f || !NOT_PRINTABLE.test(char)) out += char;
    else if (point <= 0xff) out += `\\x${hex2(point)}`;
    else if (point <= 0xffff) out += `\\u${point.toString(16).padStart(4, '0')}`;
    else out += `\\U${point.toString(16).padStart(8, '0')}`;
  }
  return out;
}

/** Python's str(bytes) (its repr) of the UTF-8 bytes, `b'` and quote cut. */
function pythonBytesInner(bytes: Buffer): string {
  const quote = bytes.includes(0x27) && !bytes.includes(0x22) ? 0x22 : 0x27;
  let out = '';
  for (const byte of bytes) {
    if (byte === quote || byte === 0x5c) out += `\\${String.fromCharCode(byte)}`;
    else if (byte === 0x09) out += '\\t';
    else if (byte === 0x0a) out += '\\n';
    else if (byte === 0x0d) out += '\\r';
    else if (byte < 0x20 || byte >= 0x7f) out += `\\x${hex2(byte)}`;
    else out += String.fromCharCode(byte);
  }
  return out;
}

/** Node's util.inspect of a string (console.log of an object holding it), quotes cut. */
function nodeInspectInner(value: string): string {
  return inspect(value, { maxStringLength: Infinity }).slice(1, -1);
}

/** encodeURIComponent, and what Python's urllib.parse.quote / quote_plus make of the value. */
function urlForms(value: string): string[] {
  let component: string;
  try {
    component = encodeURIComponent(value);
  } catch {
    return []; // a lone surrogate: no URL encoder takes it
  }
  // Python also escapes !'()* and leaves / alone in quote() (its default safe='/').
  const python = component.replace(/[!'()*]/g, (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`);
  return [component, component.replace(/%20/g, '+'), python.replace(/%2F/g, '/'), python.replace(/%20/g, '+')];
}

/**
 * base64 of the value wherever it sits in the encoded bytes: for each of the three alignments,
 * the characters that only the value's own bits decide (the first one or two and the last depend
 * on the bytes around it), in both alphabets; and the value encoded alone, padded and unpadded.
 */
function base64Forms(bytes: Buffer): string[] {
  const forms: string[] = [];
  const both = (text: string) => forms.push(text, text.replace(/\+/g, '-').replace(/\//g, '_'));
  const alone = bytes.toString('base64');
  both(alone);
  both(alone.replace(/=+$/, ''));
  for (const offset of [0, 1, 2]) {
    const encoded = Buffer.concat([Buffer.alloc(offset), bytes]).toString('base64');
    both(encoded.slice(Math.ceil((offset * 8) / 6), Math.floor(((offset + bytes.length) * 8) / 6)));
  }
  return forms;
}

/**
 * The value's bytes as everyday code prints a byte buffer: Node's util.inspect / console.log of a
 * Buffer (`<Buffer 73 6b ...>`) and Python's bytes.hex(' '); JSON.stringify of a Buffer
 * (`{"type":"Buffer","data":[115,107,...]}`); Python's list(b"...") and json.dumps of it, Node's
 * inspect of a short byte array (`[115, 107, ...]`). A bytearray's repr is str(bytes)'s form.
 */
function byteListForms(bytes: Buffer): string[] {
  const hex = [...bytes].map(hex2);
  const decimal = [...bytes].map(String);
  return [hex.join(' '), decimal.join(','), decimal.join(', ')];
}

/**
 * The forms in which a value leaks by accident: raw; as JSON.stringify and Python's json.dumps
 * write it (also once more inside a JSON string); as Python's repr(), str(bytes) and Node's
 * util.inspect show it (also inside a JSON string); base64 at any offset; hex; URL-encoded; as
 * printed byte lists (byteListForms).
 */
export function envValueForms(value: string): string[] {
  const bytes = Buffer.from(value, 'utf8');
  const forms = new Set([
    value,
    jsonInner(value),
    jsonInner(jsonInner(value)),
    pythonJsonInner(value),
    pythonJsonInner(pythonJsonInner(value)),
    pythonReprInner(value),
    pythonBytesInner(bytes),
    nodeInspectInner(value),
    // A printed form inside JSON (a log line, a JSON field holding a message).
    jsonInner(pythonReprInner(value)),
    pythonJsonInner(pythonReprInner(value)),
    jsonInner(pythonBytesInner(bytes)),
    jsonInner(nodeInspectInner(value)),
    ...base64Forms(bytes),
    bytes.toString('hex'),
    bytes.toString('hex').toUpperCase(),
    ...byteListForms(bytes),
    ...urlForms(value),
  ]);
  return [...forms].filter((form) => form.length >= MIN_ENV_VALUE_LENGTH);
}

/**
 * Where a text was cut short: the server's marker after stdout or stderr past their cap, and
 * util.inspect's after a Buffer past 50 bytes (` ... 12 more bytes>`) or a string past its
 * maxStringLength (`'...'... 12 more characters`). The position is where the kept text ends
 * (before a quote inspect closed it with, and before U+FFFD left by a UTF-8 sequence cut in two).
 */
const CUT_MARKERS = /\n\[output cut: \d+ more bytes not shown\]\n| \.\.\. \d+ more bytes>|['"`]?\.\.\. \d+ more characters?/g;

export function cutPositions(text: string): number[] {
  if (!text.includes('... ') && !text.includes('[output cut: ')) return [];
  const cuts: number[] = [];
  for (const match of text.matchAll(CUT_MARKERS)) {
    let at = match.index!;
    for (let back = 0; back < 3 && text.charCodeAt(at - 1) === 0xfffd; back++) at--;
    cuts.push(at);
  }
  return cuts;
}

/** What survives of an env value's form at a cut is redacted from this many code units. */
export const MIN_PARTIAL_LENGTH = 4;

/**
 * The start of each pattern family, after which everything up to a cut (in `body`'s class) is
 * what survived of a secret cut there (`keep`: the context that stays, as in AWS_SECRET).
 */
interface PartialPattern {
  marker: string;
  start: RegExp;
  body: RegExp;
  keep?: boolean;
}

const PARTIAL_PATTERNS: readonly PartialPattern[] = Object.freeze([
  {
    marker: 'CONNECTION_URI',
    start: /\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver):\/\/[^\s:@/'"]+:/gi,
    body: /[^\s'"<>]/,
  },
  { marker: 'STRIPE_WEBHOOK', start: /\bwhsec_/g, body: /[A-Za-z0-9]/ },
  { marker: 'STRIPE_KEY', start: /\b(?:sk|pk|rk)_(?:live|test)_/g, body: /[A-Za-z0-9]/ },
  { marker: 'API_KEY', start: /\bsk-/g, body: /[A-Za-z0-9_-]/ },
  { marker: 'AWS_KEY', start: /\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)/g, body: /[0-9A-Z]/ },
  { marker: 'AWS_SECRET', start: /aws_?secret_?(?:access_?)?key(?:_id)?["']?\s*[:=]\s*["']?/gi, body: /[A-Za-z0-9/+=]/, keep: true },
  { marker: 'GITHUB_TOKEN', start: /\b(?:ghr|ghu|ghs|gho|ghp)_/g, body: /[A-Za-z0-9]/ },
  { marker: 'GITHUB_TOKEN', start: /\bgithub_pat_/g, body: /[A-Za-z0-9_]/ },
  { marker: 'GITLAB_TOKEN', start: /\bglpat-/g, body: /[A-Za-z0-9_-]/ },
  { marker: 'SLACK_TOKEN', start: /\bxox[abposr]-/g, body: /[A-Za-z0-9-]/ },
  { marker: 'MCPWORKS_KEY', start: /\bmcpw(?:at|rt)?_/g, body: /[0-9a-f]/ },
  { marker: 'JWT', start: /(?<![A-Za-z0-9_])eyJ/g, body: /[A-Za-z0-9_.-]/ },
]);

/** How far before a cut a pattern's start is looked for (tokens are shorter; a PEM block is not). */
const PARTIAL_WINDOW = 4096;

/**
 * [start, end) ranges of what survived of a secret at each cut: a pattern family's start followed
 * by its body's characters up to the cut, or a private key's BEGIN line with no END before the cut.
 * Each cut looks back only to the previous one, so the work stays linear in the text.
 */
function partialsAtCuts(text: string, cuts: readonly number[]): Array<[number, number, string]> {
  const found: Array<[number, number, string]> = [];
  let from = 0;
  for (const cut of cuts) {
    const windowStart = Math.max(from, cut - PARTIAL_WINDOW);
    const window = text.slice(windowStart, cut);
    for (const { marker, start, body, keep } of PARTIAL_PATTERNS) {
      // Where the run of body characters that reaches the cut begins.
      let run = window.length;
      while (run > 0 && body.test(window[run - 1]!)) run--;
      if (run === window.length) continue;
      start.lastIndex = 0;
      for (const match of window.matchAll(start)) {
        const end = match.index! + match[0].length;
        if (end < run || end >= window.length) continue;
        found.push([windowStart + (keep ? end : match.index!), cut, marker]);
        break;
      }
    }
    const begin = window.lastIndexOf('-----BEGIN ');
    if (begin !== -1 && !window.includes('-----END ', begin)) {
      PEM_BEGIN.lastIndex = 0;
      const header = PEM_BEGIN.exec(window.slice(begin, begin + 80));
      if (header?.index === 0) found.push([windowStart + begin, cut, 'PRIVATE_KEY']);
    }
    from = cut;
  }
  return found;
}

/** The server's marker before a traceback it cut (it keeps the end): a value's end may start it. */
const HEAD_CUT = '[traceback cut]\n';

/**
 * A private key the traceback's head cut split: from the cut to the first END line when no BEGIN
 * line comes before it (the base64 lines between are the key's). Other tokens the cut would split
 * are not kept at all: the server starts the kept part between tokens (trimTraceback).
 */
function pemTailAtHead(text: string): [number, number] | undefined {
  const cutAt = text.lastIndexOf(HEAD_CUT);
  if (cutAt === -1) return undefined;
  const from = cutAt + HEAD_CUT.length;
  const ends = new RegExp(PEM_END.source, 'g');
  ends.lastIndex = from;
  const end = ends.exec(text);
  if (!end) return undefined;
  const begin = text.indexOf('-----BEGIN ', from);
  return begin !== -1 && begin < end.index ? undefined : [from, end.index + end[0].length];
}

/**
 * Length of the longest start of `text` (from `from`) that is an end of `form`: the overlap of
 * form and text, through the prefix function of text's head, then form (linear in both).
 */
function overlap(form: string, text: string, from: number): number {
  const head = text.slice(from, from + form.length);
  const joined = `${head}\u0000${form}`;
  const border = new Int32Array(joined.length);
  for (let i = 1; i < joined.length; i++) {
    let k = border[i - 1]!;
    while (k > 0 && joined.charCodeAt(i) !== joined.charCodeAt(k)) k = border[k - 1]!;
    if (joined.charCodeAt(i) === joined.charCodeAt(k)) k++;
    border[i] = k;
  }
  return Math.min(border[joined.length - 1]!, head.length);
}

/** Replaces [start, end) ranges (any order, may overlap) by their markers. */
function redactRanges(text: string, ranges: Array<[number, number, string]>, findings: Finding[]): string {
  if (ranges.length === 0) return text;
  ranges.sort((a, b) => a[0] - b[0]);
  let out = '';
  let last = 0;
  for (const [start, end, marker] of ranges) {
    if (end <= last) continue;
    findings.push({ type: marker });
    out += `${text.slice(last, Math.max(start, last))}[REDACTED_${marker}]`;
    last = end;
  }
  return out + text.slice(last);
}

/**
 * A printed list of byte values however it is spaced: util.inspect of a long array or a typed
 * array aligns numbers in columns over several lines (`[\n   97, 110,  45, …`), and past 100
 * items ends with `... N more items`. Eight or more numbers of up to three digits, separated by a
 * comma and any white space.
 */
const NUMBER_LIST = /(?<![\w.])\d{1,3}(?![\d.])(?:,\s*\d{1,3}(?![\d.])){7,}/g;
/** util.inspect's marker after the items it showed of a long array (the list was cut there). */
const MORE_ITEMS = /^,?\s*\.\.\. \d+ more items?/;

/**
 * Redacts the output of one call. Guards against accidental leaks (a secret printed, returned or
 * encoded by everyday code), not against code that wants to leak one: that code can always
 * transform a value in a way no scanner anticipates.
 */
export class SecretScanner {
  private readonly envMatcher: LiteralMatcher;
  private readonly forms: readonly string[];
  private readonly formUnits: number;

  constructor(envValues: Iterable<string> = []) {
    const forms: string[] = [];
    for (const value of envValues) if (value.length >= MIN_ENV_VALUE_LENGTH) forms.push(...envValueForms(value));
    this.envMatcher = new LiteralMatcher(forms);
    this.forms = forms;
    this.formUnits = forms.reduce((sum, form) => sum + form.length, 0);
  }

  /**
   * After the last traceback cut (the server appends the traceback last, so a marker before it was
   * printed by the run and hides nothing), the longest start that is an env value form's end.
   */
  private cutHead(text: string): [number, number] | undefined {
    const marker = text.lastIndexOf(HEAD_CUT);
    if (marker === -1 || this.forms.length === 0) return undefined;
    const from = marker + HEAD_CUT.length;
    let longest = 0;
    for (const form of this.forms) longest = Math.max(longest, overlap(form, text, from));
    return longest >= MIN_PARTIAL_LENGTH ? [from, from + longest] : undefined;
  }

  /**
   * Code units of the env values' forms this scanner holds, for caches: in its matcher, and once
   * more in the forms it keeps for the traceback's head cut (cutHead).
   */
  get envUnits(): number {
    return this.envMatcher.units + this.formUnits;
  }

  /**
   * Env values' bytes in printed lists of numbers spaced as util.inspect spaces them (see
   * NUMBER_LIST): each list is read as `n,n,…` (the byte-list form the matcher holds), a list cut
   * by `... N more items` as cut there; the numbers a match covers become one marker.
   */
  private numberLists(text: string, findings: Finding[]): string {
    if (this.envMatcher.empty || !/\d,\s\s|\d,\n/.test(text)) return text;
    const ranges: Array<[number, number, string]> = [];
    for (const list of text.matchAll(NUMBER_LIST)) {
      // Each number's place in `n,n,…` and in the text.
      const starts: number[] = [];
      const at: Array<[number, number]> = [];
      let canonical = '';
      for (const number of list[0].matchAll(/\d+/g)) {
        if (canonical) canonical += ',';
        starts.push(canonical.length);
        canonical += number[0];
        at.push([list.index! + number.index!, list.index! + number.index! + number[0].length]);
      }
      const end = list.index! + list[0].length;
      const cut = MORE_ITEMS.test(text.slice(end, end + 40)) ? [canonical.length] : [];
      const found = this.envMatcher.ranges(canonical, cut, MIN_PARTIAL_LENGTH);
      for (let i = 0; i < found.length; i += 2) {
        // The numbers the match touches, from the first one's start to the last one's end.
        let first = 0;
        while (first + 1 < starts.length && starts[first + 1]! <= found[i]!) first++;
        let last = first;
        while (last + 1 < starts.length && starts[last + 1]! < found[i + 1]!) last++;
        ranges.push([at[first]![0], at[last]![1], 'ENV_VALUE']);
      }
    }
    return redactRanges(text, ranges, findings);
  }

  /** Redacts one string; findings are appended to `findings`. */
  scanString(text: string, findings: Finding[]): string {
    let out = text;
    const head = this.cutHead(out);
    if (head) {
      findings.push({ type: 'ENV_VALUE' });
      out = `${out.slice(0, head[0])}[REDACTED_ENV_VALUE]${out.slice(head[1])}`;
    }
    const pem = pemTailAtHead(out);
    if (pem) {
      findings.push({ type: 'PRIVATE_KEY' });
      out = `${out.slice(0, pem[0])}[REDACTED_PRIVATE_KEY]${out.slice(pem[1])}`;
    }
    const envRanges = this.envMatcher.ranges(out, cutPositions(out), MIN_PARTIAL_LENGTH);
    if (envRanges.length > 0) {
      let rebuilt = '';
      let last = 0;
      for (let i = 0; i < envRanges.length; i += 2) {
        findings.push({ type: 'ENV_VALUE' });
        rebuilt += `${out.slice(last, envRanges[i])}[REDACTED_ENV_VALUE]`;
        last = envRanges[i + 1]!;
      }
      out = rebuilt + out.slice(last);
    }
    out = this.numberLists(out, findings);
    for (const { marker, find } of SECRET_FINDERS) {
      const ranges = find(out);
      if (ranges.length === 0) continue;
      let rebuilt = '';
      let last = 0;
      for (const [start, end] of ranges) {
        findings.push({ type: marker });
        rebuilt += `${out.slice(last, start)}[REDACTED_${marker}]`;
        last = end;
      }
      out = rebuilt + out.slice(last);
    }
    for (const { marker, pattern, group } of SECRET_PATTERNS) {
      pattern.lastIndex = 0;
      if (!pattern.test(out)) continue;
      pattern.lastIndex = 0;
      out = out.replace(pattern, (match: string, ...groups: unknown[]) => {
        findings.push({ type: marker });
        if (group === undefined) return `[REDACTED_${marker}]`;
        const secret = groups[group - 1] as string;
        return match.slice(0, match.length - secret.length) + `[REDACTED_${marker}]`;
      });
    }
    // What survived of a secret cut short: the text is cut there, so nothing after it completes it.
    const cuts = cutPositions(out);
    if (cuts.length > 0) out = redactRanges(out, partialsAtCuts(out, cuts), findings);
    return out;
  }

  /**
   * An array of byte values (a Buffer returned from TypeScript arrives as `{"type":"Buffer","data":
   * [...]}`, Python's list(bytes) as a list): an env value's bytes in it become one marker string in
   * their place. Undefined when the array is not all bytes or holds no env value.
   */
  private byteArray(source: unknown[], findings: Finding[]): unknown[] | undefined {
    if (this.envMatcher.empty || source.length < MIN_ENV_VALUE_LENGTH) return undefined;
    for (const item of source) if (typeof item !== 'number' || !Number.isInteger(item) || item < 0 || item > 255) return undefined;
    const joined = source.join(',');
    const ranges = this.envMatcher.ranges(joined);
    if (ranges.length === 0) return undefined;
    const out: unknown[] = [];
    let offset = 0;
    let range = 0;
    for (const item of source) {
      const end = offset + String(item).length;
      while (range < ranges.length && ranges[range + 1]! <= offset) range += 2;
      // An element any part of which a range covers goes; each range leaves one marker.
      if (range < ranges.length && ranges[range]! < end) {
        if (out[out.length - 1] !== MARKER_OF_RANGE) {
          findings.push({ type: 'ENV_VALUE' });
          out.push(MARKER_OF_RANGE);
        }
      } else {
        out.push(item);
      }
      offset = end + 1;
    }
    return out;
  }

  /**
   * Redacts every string inside a JSON value (object keys included), returning a new value.
   * Iterative: however deep the value, the server's stack is not.
   */
  scanValue(value: unknown, findings: Finding[]): unknown {
    const holder: Record<string, unknown> = {};
    const work: Array<{ source: unknown; into: Record<string, unknown> | unknown[]; key: string | number }> = [
      { source: value, into: holder, key: 'value' },
    ];
    for (let task = work.pop(); task !== undefined; task = work.pop()) {
      const { source, into, key } = task;
      let scanned: unknown = source;
      if (typeof source === 'string') {
        scanned = this.scanString(source, findings);
      } else if (typeof source === 'number') {
        // A numeric secret (a PIN, an account number) can come back as a number.
        if (!this.envMatcher.empty) {
          const text = String(source);
          const redacted = this.scanString(text, findings);
          if (redacted !== text) scanned = redacted;
        }
      } else if (Array.isArray(source)) {
        const bytes = this.byteArray(source, findings);
        if (bytes) {
          scanned = bytes;
        } else {
          const copy: unknown[] = new Array(source.length);
          for (let i = source.length - 1; i >= 0; i--) work.push({ source: source[i], into: copy, key: i });
          scanned = copy;
        }
      } else if (source !== null && typeof source === 'object') {
        const copy: Record<string, unknown> = {};
        for (const [name, item] of Object.entries(source as Record<string, unknown>)) {
          const redactedName = this.scanString(name, findings);
          // Defined, not assigned: a key named __proto__ stays a key.
          Object.defineProperty(copy, redactedName, { value: undefined, writable: true, enumerable: true, configurable: true });
          work.push({ source: item, into: copy, key: redactedName });
        }
        scanned = copy;
      }
      (into as Record<string | number, unknown>)[key] = scanned;
    }
    return holder.value;
  }
}

const MARKER_OF_RANGE = '[REDACTED_ENV_VALUE]';

/** Distinct finding types, for security events. */
export function findingTypes(findings: readonly Finding[]): string[] {
  return [...new Set(findings.map((f) => f.type))].sort();
}
