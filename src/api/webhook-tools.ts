import { z } from 'zod';
import type { KeyPrincipal } from '../services/accounts.js';
import type { WebhookService } from '../services/webhooks.js';
import { SIGNATURE_WINDOW_SECONDS } from '../core/webhook-signature.js';
import { agentFields, DESTRUCTIVE, READ_ONLY, type ToolRegistrar, WRITE } from './tool-kit.js';

const pathArg = z.string().describe('Webhook path: one URL segment of 1-64 lowercase letters, digits, "-" or "_", e.g. "github-push"');

/** add_webhook, list_webhooks, remove_webhook on the create endpoint. */
export function registerWebhookTools(
  tool: ToolRegistrar,
  ctx: { principal: KeyPrincipal; namespace: string; webhooks: WebhookService; url: URL },
): void {
  const { principal, namespace: ns, webhooks, url } = ctx;
  tool(
    'add_webhook',
    {
      description:
        `Give an agent of namespace "${ns}" an HTTP webhook: POST /mcp/agent/${ns}/{agent}/webhook/{path} runs handler_function_name with {body, headers, query, path} ` +
        '(body: parsed JSON for a JSON content type, else text) and answers 202 {run_id}, or with ?wait=true the outcome. The answer has the full URL. ' +
        `With a secret, every delivery must be signed: X-MCPWorks-Timestamp (unix seconds, within ${SIGNATURE_WINDOW_SECONDS} s) and X-MCPWorks-Signature: sha256=<hex HMAC-SHA256 of "timestamp.body">; each signature is accepted once. ` +
        'Without a secret anyone with the URL can call it. The body is capped by your plan (Pro 1 MB, Enterprise 5 MB, Dedicated 10 MB), deliveries per webhook per minute too; deliveries get 503 while the agent is stopped.',
      input: z.object({
        ...agentFields,
        path: pathArg,
        handler_function_name: z.string().optional().describe('The function each delivery runs, as "service.function" (required)'),
        function_name: z.string().optional().describe('Same as handler_function_name'),
        secret: z
          .string()
          .optional()
          .describe(
            'HMAC-SHA256 key senders sign with (16-256 characters, e.g. from `openssl rand -hex 32`); stored encrypted, never shown again',
          ),
        orchestration_mode: z
          .string()
          .optional()
          .describe(
            "'direct' (default: the handler runs with the delivery as input); 'run_then_reason' (it runs, then the agent's model gets its outcome); 'reason_first' (the model gets the delivery and decides). Without configure_agent_ai the AI modes run direct",
          ),
      }),
      annotations: WRITE,
    },
    (a) => webhooks.addWebhook(principal, ns, a, url),
  );
  tool(
    'list_webhooks',
    {
      description: "List an agent's webhooks: path, handler, whether deliveries must be signed, and the full URLs (never the secret).",
      input: z.object(agentFields),
      annotations: READ_ONLY,
    },
    (a) => webhooks.listWebhooks(principal, ns, a, url),
  );
  tool(
    'remove_webhook',
    {
      description: "Remove an agent's webhook by path: its URL answers 404 from then on (runs already started finish).",
      input: z.object({ ...agentFields, path: pathArg }),
      annotations: DESTRUCTIVE,
    },
    (a) => webhooks.removeWebhook(principal, ns, a),
  );
}
