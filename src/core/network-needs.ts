/**
 * Whether a function will need the sandbox network (MCPWORKS_SANDBOX_NETWORK), judged from what it
 * declares: its template, or a requirement whose purpose is talking to other hosts. And what a run
 * that tried the network anyway looks like, so that its error can name the cause.
 */
import { PYTHON_PACKAGES } from './python-packages-data.js';
import type { FunctionDefinition } from './functions.js';

/** Templates that call out (api-connector, slack-notifier). */
export const NETWORK_TEMPLATES = new Set(['api-connector', 'slack-notifier']);
/** Allow-list categories whose packages exist to reach other hosts. */
const NETWORK_CATEGORIES = new Set(['HTTP', 'AI', 'Cloud', 'Database']);
const PYTHON_NETWORK = new Set(PYTHON_PACKAGES.filter((p) => NETWORK_CATEGORIES.has(p.category)).map((p) => p.name));
const NPM_NETWORK =
  /^(axios|node-fetch|got|undici|ky|superagent|cross-fetch|openai|@anthropic-ai\/sdk|stripe|twilio|@slack\/.+|pg|mysql2?|mongodb|mongoose|redis|ioredis|@aws-sdk\/.+|aws-sdk|@google-cloud\/.+|ws|socket\.io-client)$/;

/** The reason a definition needs the network, or undefined. */
export function networkNeed(definition: Pick<FunctionDefinition, 'language' | 'requirements'>, template?: string): string | undefined {
  if (template && NETWORK_TEMPLATES.has(template)) return `template '${template}' calls other hosts`;
  const packages = definition.requirements.map((r) => (definition.language === 'python' ? r : r.replace(/(?!^)@.*$/, '')));
  const needing = packages.filter((p) => (definition.language === 'python' ? PYTHON_NETWORK.has(p) : NPM_NETWORK.test(p)));
  return needing.length > 0
    ? `requirement${needing.length > 1 ? 's' : ''} ${needing.join(', ')} ${needing.length > 1 ? 'are' : 'is'} for reaching other hosts`
    : undefined;
}

export const NETWORK_OFF_WARNING = (reason: string) =>
  `this server's sandbox network is off, and this function looks like it needs it (${reason}): its network calls will fail (e.g. "Temporary failure in name resolution"). The operator turns it on with MCPWORKS_SANDBOX_NETWORK=on.`;

/** What a DNS lookup or connection attempt fails with in a sandbox without network (Python and Node). */
const NETWORK_FAILURE =
  /Temporary failure in name resolution|Name or service not known|No address associated with hostname|Network is unreachable|EAI_AGAIN|ENOTFOUND|ENETUNREACH|getaddrinfo|fetch failed/;

export function looksLikeNetworkFailure(text: string): boolean {
  return NETWORK_FAILURE.test(text);
}

export const NETWORK_OFF_CAUSE =
  'The sandbox network is off on this server, so functions cannot reach other hosts (this is not a DNS fault). The operator turns it on with MCPWORKS_SANDBOX_NETWORK=on (see the README, "Network").';
