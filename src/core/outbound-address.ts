/**
 * Where an agent's outbound connections may go (issue 16): its attached MCP servers' URLs and its
 * model's base_url, one set of rules, no I/O. Addresses in loopback, private, link-local, CGNAT,
 * metadata, unspecified, multicast and reserved ranges are refused unless the operator allows them
 * (MCPWORKS_AGENT_MCP_ALLOW); this server's create endpoints never, in any spelling. For an attached
 * server this server's own run endpoints are always allowed; for a model, this server's own
 * address and port never are (it is no model). Names are resolved and every answer checked at
 * connect time (src/agents/outbound-guard.ts), with these rules.
 */
import { invalid } from './errors.js';

export const OUTBOUND_URL_MAX_CHARS = 2048;
const CONTROL = /[\u0000-\u001f\u007f]/;

/** A server's address as the rules see it. */
export interface ServerTarget {
  /** The URL as WHATWG parses it (IPv4 in any spelling is dotted decimal here, IPv6 compressed). */
  url: string;
  protocol: 'http:' | 'https:';
  /** Lower case, no brackets, no trailing dot. */
  host: string;
  port: number;
  /** The host is an IP address (no resolution: this is the address). */
  literal?: IpAddress | undefined;
  /** The path is exactly `/mcp/run/{ns}` (this server's run endpoint's form). */
  runPath: boolean;
}

/**
 * An attached server's URL: http(s), no credentials in it (give them as headers), no fragment, and
 * never this server's create endpoint, whatever the spelling (case, percent-encoding of any depth,
 * `//`, `/./`, `..`, backslashes, a `create` label in the host).
 */
export function parseServerUrl(value: unknown, field = 'url'): ServerTarget {
  const bad = (why: string) => invalid(`${field} ${why}`, { field });
  if (typeof value !== 'string' || value.length === 0 || value.length > OUTBOUND_URL_MAX_CHARS || CONTROL.test(value) || /\s/.test(value))
    throw bad(`must be an http(s) address of at most ${OUTBOUND_URL_MAX_CHARS} characters, without spaces`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw bad('must be an absolute http(s) address, e.g. https://mcp.example.com/mcp');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw bad('must use http or https (Streamable HTTP servers only; no command ever runs on this host)');
  if (url.username || url.password) throw bad('may not carry credentials: give them as headers (they are stored encrypted)');
  if (url.hash || value.includes('#')) throw bad('may not have a fragment');
  const host = bareHost(url.hostname);
  if (host === '') throw bad('must name a host');
  if (isCreateEndpoint(url)) throw bad("may not be an MCP create endpoint: an agent never reaches this server's management tools");
  const literal = parseIp(host);
  const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
  return {
    url: url.href,
    protocol: url.protocol,
    host,
    port,
    ...(literal ? { literal } : {}),
    runPath: /^\/mcp\/run\/[a-z0-9][a-z0-9-]{0,62}\/?$/.test(url.pathname),
  };
}

/** A hostname as compared: lower case, IPv6 brackets and a trailing dot dropped. */
export function bareHost(hostname: string): string {
  let host = hostname.toLowerCase();
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  while (host.endsWith('.')) host = host.slice(0, -1);
  return host;
}

/**
 * `{ns}.create.{host}` (a `create` label anywhere in the host) or a path with a `create` segment
 * after an `mcp` one, once fully decoded and with `\` as `/`: this server's create endpoint in
 * every spelling its router or a proxy in front of it could take.
 */
export function isCreateEndpoint(url: URL): boolean {
  if (bareHost(url.hostname).split('.').includes('create')) return true;
  let path = url.pathname;
  for (let round = 0; ; round++) {
    const decoded = path.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
    if (decoded === path) break;
    // Still encoded after four rounds: nothing legitimate looks like that.
    if (round === 4) return true;
    path = decoded;
  }
  const segments = path
    .toLowerCase()
    .replace(/\\/g, '/')
    .split('/')
    .map((segment) => segment.trim())
    .filter((segment) => segment !== '' && segment !== '.');
  const mcp = segments.indexOf('mcp');
  return mcp >= 0 && segments.slice(mcp + 1).includes('create');
}

// ---- IP addresses and ranges -------------------------------------------------------------------

export interface IpAddress {
  family: 4 | 6;
  value: bigint;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/**
 * A dotted-decimal IPv4 or an IPv6 address (brackets allowed, no zone); an IPv4-mapped IPv6
 * address (::ffff:a.b.c.d) is the IPv4 address it maps. Other spellings of IPv4 (decimal, octal,
 * hex, short forms) never get here: URL parsing rewrites them in dotted decimal, and the operator's
 * list refuses them.
 */
export function parseIp(text: string): IpAddress | undefined {
  let s = text;
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const v4 = parseIpv4(s);
  if (v4 !== undefined) return { family: 4, value: v4 };
  const v6 = parseIpv6(s);
  if (v6 === undefined) return undefined;
  if (v6 >> 32n === 0xffffn) return { family: 4, value: v6 & 0xffffffffn };
  return { family: 6, value: v6 };
}

function parseIpv4(s: string): bigint | undefined {
  const m = IPV4.exec(s);
  if (!m) return undefined;
  let value = 0n;
  for (const part of m.slice(1)) {
    // A leading zero is octal to some parsers and decimal to others: not an address here.
    if (part.length > 1 && part.startsWith('0')) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseIpv6(s: string): bigint | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.length > 45) return undefined;
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const groups = (part: string): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!;
      if (i === items.length - 1 && item.includes('.')) {
        const v4 = parseIpv4(item);
        if (v4 === undefined) return undefined;
        out.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      } else if (/^[0-9a-fA-F]{1,4}$/.test(item)) out.push(parseInt(item, 16));
      else return undefined;
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  let all: number[];
  if (halves.length === 2) {
    if (head.length + tail.length > 7) return undefined;
    all = [...head, ...Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    if (head.length !== 8) return undefined;
    all = head;
  }
  return all.reduce((sum, group) => (sum << 16n) | BigInt(group), 0n);
}

export function formatIp(ip: IpAddress): string {
  if (ip.family === 4) return [24n, 16n, 8n, 0n].map((shift) => String((ip.value >> shift) & 255n)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => Number((ip.value >> BigInt(112 - 16 * i)) & 0xffffn));
  // The longest run of two or more zero groups becomes '::' (RFC 5952).
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (part: number[]) => part.map((g) => g.toString(16)).join(':');
  return best < 0 ? hex(groups) : `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLength))}`;
}

interface Cidr {
  family: 4 | 6;
  value: bigint;
  length: number;
}

function parseCidr(text: string): Cidr | undefined {
  const [address, length, extra] = text.split('/');
  if (extra !== undefined || address === undefined) return undefined;
  const ip = parseIp(address);
  if (!ip) return undefined;
  // An IPv4-mapped prefix is the IPv4 prefix it maps.
  const mapped = ip.family === 4 && parseIpv4(address) === undefined;
  const bits = ip.family === 4 ? 32 : 128;
  let n = bits;
  if (length !== undefined) {
    if (!/^\d{1,3}$/.test(length)) return undefined;
    n = Number(length) - (mapped ? 96 : 0);
    if (n < 0 || n > bits) return undefined;
  }
  return { family: ip.family, value: ip.value, length: n };
}

function contains(range: Cidr, ip: IpAddress): boolean {
  if (range.family !== ip.family) return false;
  const shift = BigInt((range.family === 4 ? 32 : 128) - range.length);
  return ip.value >> shift === range.value >> shift;
}

/** What a refused range is called in refusals. */
export type RefusedKind =
  'metadata' | 'loopback' | 'private' | 'link-local' | 'CGNAT' | 'unspecified' | 'multicast' | 'broadcast' | 'documentation' | 'reserved';

/**
 * IANA's special-purpose ranges (IPv4 and IPv6 registries) that are not globally reachable, most
 * specific first. Cloud metadata endpoints are their own kind: a broad allowed range does not open them.
 */
const RANGES: ReadonlyArray<[string, RefusedKind]> = [
  ['169.254.169.254/32', 'metadata'], // AWS, GCP, Azure, OpenStack, …
  ['169.254.169.253/32', 'metadata'], // AWS DNS
  ['169.254.170.2/32', 'metadata'], // AWS ECS task metadata
  ['169.254.170.23/32', 'metadata'], // AWS EKS pod identity
  ['100.100.100.200/32', 'metadata'], // Alibaba Cloud
  ['fd00:ec2::254/128', 'metadata'], // AWS over IPv6
  ['fd00:ec2::23/128', 'metadata'],
  ['0.0.0.0/8', 'unspecified'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'CGNAT'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'reserved'],
  ['192.0.2.0/24', 'documentation'],
  ['192.88.99.0/24', 'reserved'],
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'reserved'],
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
  ['240.0.0.0/4', 'reserved'],
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['64:ff9b::/96', 'reserved'], // NAT64: reaches an IPv4 address this check did not see
  ['64:ff9b:1::/48', 'reserved'],
  ['100::/64', 'reserved'],
  ['2001::/23', 'reserved'], // Teredo and other IETF assignments
  ['2001:db8::/32', 'documentation'],
  ['2002::/16', 'reserved'], // 6to4: an embedded IPv4 address
  ['3fff::/20', 'documentation'],
  ['5f00::/16', 'reserved'],
  ['fc00::/7', 'private'], // unique local
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'private'], // site-local (deprecated)
  ['ff00::/8', 'multicast'],
];

const PARSED_RANGES: ReadonlyArray<[Cidr, RefusedKind]> = RANGES.map(([cidr, kind]) => [parseCidr(cidr)!, kind]);
/** IPv6 global unicast: everything outside it is refused as reserved. */
const GLOBAL_UNICAST_V6 = parseCidr('2000::/3')!;

/** The refused range an address is in, or undefined for a globally reachable one. */
export function refusedKind(ip: IpAddress): RefusedKind | undefined {
  for (const [range, kind] of PARSED_RANGES) if (contains(range, ip)) return kind;
  if (ip.family === 6 && !contains(GLOBAL_UNICAST_V6, ip)) return 'reserved';
  return undefined;
}

// ---- The operator's list and the decision -------------------------------------------------------

export type AllowEntry = { kind: 'range'; range: Cidr; text: string } | { kind: 'host'; host: string };

const HOSTNAME = /^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/**
 * MCPWORKS_AGENT_MCP_ALLOW: a comma list of addresses, CIDR ranges (IPv4 or IPv6) and host names
 * the operator lets agents reach although they are in a refused range. Throws (the server does not
 * start) on an entry that is none of these, or an IPv4 address in a spelling other than dotted decimal.
 */
export function parseAgentMcpAllow(value: string | undefined): AllowEntry[] {
  const entries: AllowEntry[] = [];
  for (const raw of (value ?? '').split(',')) {
    const text = raw.trim().toLowerCase();
    if (text === '') continue;
    const range = parseCidr(text);
    if (range) {
      entries.push({ kind: 'range', range, text });
      continue;
    }
    const host = bareHost(text);
    if (text.includes('/') || /^[0-9.]+$/.test(host) || /^0x/.test(host) || host.includes(':') || !HOSTNAME.test(host))
      throw new Error(
        `MCPWORKS_AGENT_MCP_ALLOW: ${JSON.stringify(raw.trim().slice(0, 80))} is not an IP address, CIDR range (dotted-decimal IPv4 or IPv6) or host name`,
      );
    entries.push({ kind: 'host', host });
  }
  return entries;
}

/** This server's own endpoints, as attached servers may reach its run endpoints. */
export interface OwnEndpoints {
  /** The addresses it listens on (its run endpoints there: `/mcp/run/{ns}` on `port`). */
  addresses: IpAddress[];
  port: number;
  /** MCPWORKS_BASE_HOST (`host` or `host:port`): `{ns}.run.{base}` is this server's run endpoint. */
  baseHost?: string | undefined;
}

/**
 * What the connection is for: an attached MCP server (this server's run endpoints are one) or the
 * model of an agent's AI (this server is never one: its own address and port are refused).
 */
export type OutboundPurpose = 'mcp' | 'model';

export interface AddressPolicy {
  allow: readonly AllowEntry[];
  own?: OwnEndpoints | undefined;
  /** 'mcp' unless given. */
  purpose?: OutboundPurpose | undefined;
}

/** The base host's name and port (`host` or `host:port`; the scheme's port when none is given). */
function baseHostOf(own: OwnEndpoints, protocol: ServerTarget['protocol']): { name: string; port: number } | undefined {
  if (!own.baseHost) return undefined;
  const match = /^(.*?)(?::(\d+))?$/.exec(own.baseHost.toLowerCase())!;
  return { name: bareHost(match[1]!), port: match[2] !== undefined ? Number(match[2]) : protocol === 'https:' ? 443 : 80 };
}

/** `{ns}.run.{base}` on the base host's port: this server's run endpoint by name (the operator's DNS). */
export function isOwnRunHost(target: ServerTarget, own: OwnEndpoints | undefined): boolean {
  const base = own && baseHostOf(own, target.protocol);
  if (!base) return false;
  const labels = target.host.split('.');
  return labels.length > 2 && labels[1] === 'run' && labels.slice(2).join('.') === base.name && target.port === base.port;
}

/**
 * This server itself, as a model's address: the base host or any name under it on its port, or
 * an address it listens on (any loopback or unspecified address, which reach it too) on its port.
 */
function isOwnServer(target: ServerTarget, address: IpAddress, own: OwnEndpoints | undefined): boolean {
  if (!own) return false;
  const base = baseHostOf(own, target.protocol);
  if (base && target.port === base.port && (target.host === base.name || target.host.endsWith(`.${base.name}`))) return true;
  if (target.port !== own.port) return false;
  const kind = refusedKind(address);
  return (
    kind === 'loopback' || kind === 'unspecified' || own.addresses.some((a) => a.family === address.family && a.value === address.value)
  );
}

/**
 * Whether a connection to `address` for `target` may go ahead: undefined when it may, else the
 * refusal's reason. Order: for a model, this server itself is refused whatever the operator's list
 * says; for an attached server, this server's run endpoint (its address and port, the run path) is
 * always allowed; then a globally reachable address is; then the operator's list (a metadata
 * address only by its own entry: a broad range or a host name does not open it).
 */
export function refusal(target: ServerTarget, address: IpAddress, policy: AddressPolicy): string | undefined {
  const own = policy.own;
  if (policy.purpose === 'model') {
    if (isOwnServer(target, address, own))
      return `${target.host}:${target.port} is this server's own address: a model is never reached there`;
  } else {
    if (isOwnRunHost(target, own)) return undefined;
    if (
      own &&
      target.runPath &&
      target.port === own.port &&
      own.addresses.some((a) => a.family === address.family && a.value === address.value)
    )
      return undefined;
  }
  const kind = refusedKind(address);
  if (kind === undefined) return undefined;
  const exact = address.family === 4 ? 32 : 128;
  for (const entry of policy.allow) {
    if (entry.kind === 'range' && contains(entry.range, address) && (kind !== 'metadata' || entry.range.length === exact)) return undefined;
    if (entry.kind === 'host' && entry.host === target.host && kind !== 'metadata') return undefined;
  }
  const where = target.literal ? `${target.host} is` : `${target.host} resolves to ${formatIp(address)},`;
  return (
    `${where} a ${kind} address: agents may not reach it` +
    (kind === 'metadata' ? ' (a cloud metadata endpoint)' : '') +
    ' unless the operator lists it in MCPWORKS_AGENT_MCP_ALLOW'
  );
}
