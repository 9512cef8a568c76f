/**
 * Output secret scanner: every string a run returns (result, logs, errors) passes through here
 * before it reaches the client. Known credential shapes and the exact values of the caller's env
 * variables (and their base64, hex and URL-encoded forms) become `[REDACTED_<TYPE>]`.
 */

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
  { marker: 'CONNECTION_URI', pattern: /\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver):\/\/[^\s:@/'"]+:[^\s@/'"]+@[^\s'"<>]+/gi },
  { marker: 'STRIPE_WEBHOOK', pattern: /\bwhsec_[A-Za-z0-9]{20,}/g },
  { marker: 'STRIPE_KEY', pattern: /\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}/g },
  { marker: 'API_KEY', pattern: /\bsk-(?:proj-|ant-(?:[a-z]+\d*-)?|svcacct-|admin-)?[A-Za-z0-9_-]{20,}/g },
  { marker: 'AWS_KEY', pattern: /\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b/g },
  {
    marker: 'AWS_SECRET',
    pattern: /(aws_?secret_?(?:access_?)?key(?:_id)?["']?\s*[:=]\s*["']?)([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])/gi,
    group: 2,
  },
  { marker: 'GITHUB_TOKEN', pattern: /\b(?:ghp|gho|ghs|ghu|ghr)_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{22,}/g },
  { marker: 'GITLAB_TOKEN', pattern: /\bglpat-[A-Za-z0-9_-]{20,}/g },
  { marker: 'SLACK_TOKEN', pattern: /\bxox[abposr]-[A-Za-z0-9-]{10,}/g },
  { marker: 'MCPWORKS_KEY', pattern: /\bmcpw_[0-9a-f]{64}\b/g },
]);

/** Env values shorter than this are too common to redact without mangling ordinary output. */
export const MIN_ENV_VALUE_LENGTH = 8;

export interface Finding {
  /** e.g. STRIPE_KEY, ENV_VALUE. */
  type: string;
}

function escapeRegExp(value: string): string {
  return value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The forms in which a value may leak: raw, base64 (both alphabets), hex, URL-encoded. */
function envForms(value: string): string[] {
  const bytes = Buffer.from(value, 'utf8');
  const forms = new Set([
    value,
    bytes.toString('base64'),
    bytes.toString('base64').replace(/=+$/, ''),
    bytes.toString('base64url'),
    bytes.toString('hex'),
    bytes.toString('hex').toUpperCase(),
    encodeURIComponent(value),
    encodeURIComponent(value).replace(/%20/g, '+'),
    JSON.stringify(value).slice(1, -1),
  ]);
  return [...forms].filter((form) => form.length >= MIN_ENV_VALUE_LENGTH);
}

export class SecretScanner {
  private readonly envPattern: RegExp | undefined;

  constructor(envValues: Iterable<string> = []) {
    const forms = new Set<string>();
    for (const value of envValues) {
      if (value.length >= MIN_ENV_VALUE_LENGTH) for (const form of envForms(value)) forms.add(form);
    }
    // Longest first, so a value is replaced whole rather than a shorter value inside it.
    const sorted = [...forms].sort((a, b) => b.length - a.length).map(escapeRegExp);
    this.envPattern = sorted.length > 0 ? new RegExp(sorted.join('|'), 'g') : undefined;
  }

  /** Redacts one string; findings are appended to `findings`. */
  scanString(text: string, findings: Finding[]): string {
    let out = text;
    if (this.envPattern) {
      out = out.replace(this.envPattern, () => {
        findings.push({ type: 'ENV_VALUE' });
        return '[REDACTED_ENV_VALUE]';
      });
    }
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
    return out;
  }

  /** Redacts every string inside a JSON value (object keys included), returning a new value. */
  scanValue(value: unknown, findings: Finding[]): unknown {
    if (typeof value === 'string') return this.scanString(value, findings);
    // A numeric secret (a PIN, an account number) can come back as a number.
    if (typeof value === 'number' && this.envPattern) {
      const text = String(value);
      const redacted = this.scanString(text, findings);
      return redacted === text ? value : redacted;
    }
    if (Array.isArray(value)) return value.map((item) => this.scanValue(item, findings));
    if (value !== null && typeof value === 'object') {
      const out: Record<string, unknown> = {};
      for (const [key, item] of Object.entries(value as Record<string, unknown>)) out[this.scanString(key, findings)] = this.scanValue(item, findings);
      return out;
    }
    return value;
  }
}

/** Distinct finding types, for security events. */
export function findingTypes(findings: readonly Finding[]): string[] {
  return [...new Set(findings.map((f) => f.type))].sort();
}
