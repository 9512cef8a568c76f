/**
 * Webhook deliveries (issue 15): from a POST to an agent's webhook URL to a run through the agent
 * dispatcher. Every check is a row in the database (the per-minute rate, seen signatures,
 * Idempotency-Keys), so several server processes on one database behave as one; the maps here are
 * caches of this process's own runs.
 */
import { randomUUID } from 'node:crypto';
import { DomainError, isDomainError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { isValidNamespaceName } from '../../core/names.js';
import { AGENT_NAME_PATTERN } from '../../core/agents.js';
import { isKnownTier, limitsFor, type TierLimits } from '../../core/tiers.js';
import { SIGNATURE_HEADER, SIGNATURE_WINDOW_SECONDS, TIMESTAMP_HEADER, verifySignature } from '../../core/webhook-signature.js';
import {
  IDEMPOTENCY_HOURS,
  idempotencyKeyOf,
  ORCHESTRATION_MODES,
  waitSeconds,
  WEBHOOK_PATH_PATTERN,
  webhookInput,
  type WebhookOrchestrationMode,
} from '../../core/webhooks.js';
import type { BoundCipher } from '../../services/state-cipher.js';
import { secretContext } from '../../services/webhooks.js';
import type { DeliveryRow, WebhookTarget, WebhooksStore } from '../../store/webhooks-store.js';

import { notRunRefusal, type AgentRunOutcome, type TriggerJob } from '../dispatcher.js';
import type { TriggerDispatch } from '../handoff.js';
import type { ReplicaDirectory } from '../replicas.js';

/** A delivery as the HTTP route hands it over: the URL's parts, the headers, and a body reader with a cap. */
export interface WebhookRequest {
  namespace: string;
  agent: string;
  path: string;
  headers: Headers;
  query: URLSearchParams;
  /** Reads the raw body, refusing (BodyTooLargeError) past `limit` bytes: Content-Length first, then while streaming. */
  readBody: (limit: number) => Promise<Uint8Array>;
  /** Thrown by readBody past its limit. */
  isTooLarge: (error: unknown) => boolean;
}

/** The HTTP answer: status, JSON body, extra headers; `close` ends the connection (an unread body). */
export interface WebhookAnswer {
  status: number;
  body: Record<string, unknown>;
  headers?: Record<string, string>;
  close?: boolean;
}

const error = (status: number, type: DomainError['type'], message: string, details?: Record<string, unknown>): WebhookAnswer => ({
  status,
  body: new DomainError(type, message, details).toJSON(),
});

// The body is not read: the connection ends with the answer rather than drain it.
const notFound = (req: WebhookRequest): WebhookAnswer => ({
  ...error(404, 'not_found', `no webhook at /mcp/agent/${req.namespace}/${req.agent}/webhook/${req.path}`),
  close: true,
});

/** What a waiting answer shows of an ended run. */
function outcomeBody(
  runId: string,
  outcome: Pick<AgentRunOutcome, 'status' | 'result' | 'error' | 'answer' | 'stopReason'>,
): Record<string, unknown> {
  return {
    run_id: runId,
    status: outcome.status,
    ...(outcome.status === 'succeeded' ? { result: outcome.result ?? null } : { error: outcome.error ?? null }),
    // An AI run: the model's answer (scanned, capped) and why it stopped.
    ...(outcome.answer !== undefined ? { answer: outcome.answer, stop_reason: outcome.stopReason ?? null } : {}),
  };
}

/** Keeps a keyed delivery's outcome under its key, sealed (any node that knows how its run ended); its body. */
async function keepOutcome(
  deps: Pick<WebhookTriggerDeps, 'store' | 'cipher'>,
  webhookId: string,
  key: string,
  outcome: AgentRunOutcome,
): Promise<Record<string, unknown>> {
  const body = outcomeBody(outcome.runId, outcome);
  await deps.store.finishKey(
    webhookId,
    key,
    outcome.runId,
    outcome.status,
    deps.cipher.seal(['webhook-outcome', webhookId, key], JSON.stringify(body)),
  );
  return body;
}

/**
 * Whether a keyed delivery's run was refused before anything ran (`rejected`: its replica stopped or was
 * lost, its server stopping), by the key's row or, while the key still says running, by the run's
 * record. The node that received it lets the key go then; one that had stopped following the run
 * (a rolling restart, its run on another node) could not: the sender's retry runs in its place.
 */
function neverRan(row: DeliveryRow): boolean {
  return row.status === 'rejected' || (row.status === 'running' && row.run_status === 'rejected');
}

/** How a keyed delivery's run ended by its record, when that is without success (a success's result is not in the record). */
function endedByRecord(row: DeliveryRow): AgentRunOutcome | undefined {
  if (row.run_status === null || row.run_status === 'running' || row.run_status === 'succeeded') return undefined;
  return {
    runId: row.run_id,
    replica: '',
    status: row.run_status as AgentRunOutcome['status'],
    error: { type: row.run_error_type ?? 'failed', message: row.run_error_message ?? 'the run did not succeed' },
    durationMs: 0,
    ...(row.run_answer !== null ? { answer: row.run_answer, stopReason: row.run_stop_reason ?? undefined } : {}),
  };
}

/** The trigger_ref of a delivery sent with an Idempotency-Key (the dispatcher records it on the run). */
const IDEMPOTENCY_REF = 'idempotency:';

/**
 * For the node a delivery was handed to (agents/handoff.ts): the outcome of a keyed delivery's run
 * kept under its key as the receiving node would, so a retry gets it even when the receiving node
 * stopped following the run (a rolling restart). Both nodes may write it: the same outcome. A
 * delivery refused there before anything ran (`notRun`) has its signature and key let go instead,
 * as the receiving node does, by its run: the sender's retry runs.
 */
export function keepHandedOverOutcome(deps: Pick<WebhookTriggerDeps, 'store' | 'cipher'>) {
  return async (job: TriggerJob, outcome: AgentRunOutcome, notRun = false): Promise<void> => {
    if (job.trigger !== 'webhook') return;
    const key = job.triggerRef?.startsWith(IDEMPOTENCY_REF) ? job.triggerRef.slice(IDEMPOTENCY_REF.length) : undefined;
    if (key === undefined && !notRun) return;
    const webhookId = await deps.store.idOf(job.agentId, job.triggerName);
    if (webhookId === undefined) return;
    if (notRun) {
      await deps.store.letGoSignature(webhookId, outcome.runId);
      if (key !== undefined) await deps.store.releaseKey(webhookId, key, outcome.runId);
    } else if (key !== undefined) await keepOutcome(deps, webhookId, key, outcome);
  };
}

/** A signed webhook takes this many times its rate of badly signed deliveries a minute (per node) before they are answered without an event each. */
export const REFUSED_BUDGET_FACTOR = 10;
/** How long a delivery waits for the agent's replica being started or restarted on this node (senders time out after about 10 s). */
export const WEBHOOK_REPLICA_START_WAIT_MS = 5_000;

export interface WebhookTriggerDeps {
  store: WebhooksStore;
  cipher: BoundCipher;
  tiers: Readonly<Record<string, TierLimits>>;
  /** The replica router: a replica another node runs gets the job on that node. */
  dispatcher: TriggerDispatch;
  replicas: Pick<ReplicaDirectory, 'upReplicas' | 'runningElsewhere'>;
  logger: Logger;
  /** Unix seconds now (tests of the window pass their own). */
  nowSeconds?: () => number;
  /** How often a delivery waiting on another's Idempotency-Key run looks at its row. */
  pollMs?: number;
}

export class WebhookTrigger {
  /** This process's runs still going, by run id: a waiting retry with the same key awaits it here. */
  private readonly running = new Map<string, Promise<AgentRunOutcome>>();
  /** Deliveries in flight per replica name (per agent): the least busy replica takes the next. */
  private readonly busy = new Map<string, number>();
  /** Refused deliveries per webhook in this node's current minute (their own budget; never the valid rate). */
  private readonly refusedCounts = new Map<string, { minute: number; count: number }>();

  constructor(private readonly deps: WebhookTriggerDeps) {}

  private now(): number {
    return this.deps.nowSeconds ? this.deps.nowSeconds() : Math.floor(Date.now() / 1000);
  }

  /** A refused delivery: a security event of the namespace and a log line (never the body or signature). */
  private refused(target: WebhookTarget, reason: string, answer: WebhookAnswer): WebhookAnswer {
    this.deps.logger.warn(
      {
        security_event: 'webhook_refused',
        reason,
        namespace: target.namespace_name,
        agent: target.agent_name,
        path: target.path,
        status: answer.status,
      },
      'webhook delivery refused',
    );
    // Recorded after the answer is decided; a failing insert does not change the answer.
    this.deps.store.recordRefusal(target, reason).catch((err: unknown) => {
      this.deps.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'recording a refused webhook delivery failed');
    });
    return answer;
  }

  /** Counts a delivery against the webhook's per-minute rate (the database's count, shared by every node); the 429 past it. */
  private async overRate(target: WebhookTarget, limits: TierLimits): Promise<WebhookAnswer | undefined> {
    if (limits.webhookRequestsPerMinute === null) return undefined;
    const { count, retryAfter } = await this.deps.store.countDelivery(target.id);
    if (count <= limits.webhookRequestsPerMinute) return undefined;
    const answer: WebhookAnswer = {
      ...error(429, 'rate_limited', `this webhook takes at most ${limits.webhookRequestsPerMinute} deliveries a minute`, {
        limit: limits.webhookRequestsPerMinute,
        retry_after: retryAfter,
      }),
      headers: { 'retry-after': String(retryAfter) },
      close: true,
    };
    // One event per webhook and minute: the first refusal, not each of a flood.
    return count === limits.webhookRequestsPerMinute + 1 ? this.refused(target, 'rate_limited', answer) : answer;
  }

  /**
   * Counts a refused (badly signed) delivery in this node's budget for the webhook's minute, apart from
   * the rate valid deliveries use: 'last' for the one that fills it, 'over' past it.
   */
  private countRefused(target: WebhookTarget, limits: TierLimits): 'ok' | 'last' | 'over' {
    const minute = Math.floor(Date.now() / 60_000);
    const budget = REFUSED_BUDGET_FACTOR * (limits.webhookRequestsPerMinute ?? 60);
    if (this.refusedCounts.size > 10_000) for (const [id, c] of this.refusedCounts) if (c.minute !== minute) this.refusedCounts.delete(id);
    const entry = this.refusedCounts.get(target.id);
    const count = entry && entry.minute === minute ? entry.count + 1 : 1;
    this.refusedCounts.set(target.id, { minute, count });
    return count < budget ? 'ok' : count === budget ? 'last' : 'over';
  }

  async deliver(req: WebhookRequest): Promise<WebhookAnswer> {
    if (!isValidNamespaceName(req.namespace) || !AGENT_NAME_PATTERN.test(req.agent) || !WEBHOOK_PATH_PATTERN.test(req.path))
      return notFound(req);
    const target = await this.deps.store.target(req.namespace, req.agent, req.path);
    if (!target) return notFound(req);
    if (!isKnownTier(target.tier, this.deps.tiers))
      return error(503, 'unavailable', "this webhook's account has a plan this server does not configure; its owner must ask the operator");
    const limits = limitsFor(target.tier, this.deps.tiers);

    // Unsigned: every delivery counts against the webhook's rate, before its body is read. Signed: only
    // deliveries whose signature passed count (below), so nobody without the secret can use up the
    // sender's budget; refused ones have their own, larger budget on this node (REFUSED_BUDGET_FACTOR).
    if (target.secret_sealed === null) {
      const over = await this.overRate(target, limits);
      if (over) return over;
    }

    let key: string | undefined;
    try {
      key = idempotencyKeyOf(req.headers.get('idempotency-key') ?? undefined);
    } catch (e) {
      if (!isDomainError(e)) throw e;
      return { status: 400, body: e.toJSON(), close: true };
    }

    let raw: Uint8Array;
    try {
      raw = await req.readBody(limits.webhookPayloadBytes);
    } catch (e) {
      if (!req.isTooLarge(e)) throw e;
      return this.refused(target, 'too_large', {
        ...error(413, 'limit_exceeded', `webhook body larger than ${limits.webhookPayloadBytes} bytes (this plan's cap)`, {
          resource: 'webhook_payload_bytes',
          limit: limits.webhookPayloadBytes,
          tier: target.tier,
        }),
        close: true,
      });
    }

    let signature: { signature: string; timestamp: number } | undefined;
    if (target.secret_sealed !== null) {
      const secret = this.deps.cipher.open(secretContext(target.id), target.secret_sealed);
      const check = verifySignature({
        secret,
        body: raw,
        signature: req.headers.get(SIGNATURE_HEADER) ?? undefined,
        timestamp: req.headers.get(TIMESTAMP_HEADER) ?? undefined,
        nowSeconds: this.now(),
      });
      if (!check.ok) {
        const answer = error(401, 'unauthorized', check.message, { reason: check.reason });
        const flood = this.countRefused(target, limits);
        // Past the refused budget: the same answer, without a security event or log line each.
        if (flood === 'over') return { ...answer, close: true };
        return this.refused(target, flood === 'last' ? 'refused_flood' : check.reason, answer);
      }
      signature = check;
      const over = await this.overRate(target, limits);
      if (over) return over;
    }

    let input;
    try {
      input = webhookInput({
        raw,
        contentType: req.headers.get('content-type') ?? undefined,
        headers: req.headers,
        query: req.query,
        path: target.path,
      });
    } catch (e) {
      if (!isDomainError(e)) throw e;
      return { status: 400, body: e.toJSON() };
    }

    // A stopped agent takes nothing; its signatures and keys are not used up, so the sender's retry can run later.
    // A replica being started (right after start_agent or scale_agent) or restarted here is waited for, briefly.
    // None up here: one running on another node takes it (handed over through the database).
    let replicas =
      target.agent_status === 'running' ? await this.deps.replicas.upReplicas(target.agent_id, WEBHOOK_REPLICA_START_WAIT_MS) : [];
    if (replicas.length === 0 && target.agent_status === 'running') replicas = await this.deps.replicas.runningElsewhere(target.agent_id);
    if (replicas.length === 0)
      return {
        ...error(
          503,
          'unavailable',
          target.agent_status === 'running'
            ? `agent '${target.agent_name}' has no replica running yet (starting or restarting); retry the delivery later`
            : `agent '${target.agent_name}' is ${target.agent_status}: start it with start_agent; retry the delivery later`,
        ),
        headers: { 'retry-after': '30' },
      };

    const wait = ['true', '1', 'yes'].includes((req.query.get('wait') ?? '').toLowerCase());
    if (key !== undefined) {
      const earlier = await this.deps.store.delivery(target.id, key);
      if (earlier && !neverRan(earlier)) return this.answerEarlier(target, key, earlier, wait, limits);
      if (earlier) {
        // Nothing ran under the key: this delivery takes it. The signature seen for that delivery is
        // let go to deliveries with this key only: taken below if this is the very same request.
        await this.deps.store.letGoSignature(target.id, earlier.run_id);
        await this.deps.store.releaseKey(target.id, key, earlier.run_id);
      }
    }
    const runId = randomUUID();
    if (signature) {
      // Inserted before the run: of two deliveries with one signature (on any node), one runs. This
      // node accepts the timestamp for at most 2 windows after now (its clock), so the row lives that
      // long on the database's clock too: a clock offset between them cannot reopen the window.
      const fresh = await this.deps.store.rememberSignature(
        target.id,
        signature.signature,
        signature.timestamp + SIGNATURE_WINDOW_SECONDS + 1,
        2 * SIGNATURE_WINDOW_SECONDS + 1,
        runId,
        key,
      );
      if (!fresh)
        return this.refused(
          target,
          'replayed',
          error(409, 'conflict', 'this signature was already delivered: a replay is refused; sign a new delivery (new timestamp)', {
            reason: 'replayed',
          }),
        );
    }
    if (key !== undefined) {
      const claim = await this.deps.store.claimKey(target.id, key, runId, IDEMPOTENCY_HOURS);
      if ('existing' in claim) {
        // Another delivery took the key first: this one does not run; its signature stays open to this key only.
        if (signature) await this.deps.store.letGoSignature(target.id, runId);
        return this.answerEarlier(target, key, claim.existing, wait, limits);
      }
    }

    const replica = this.leastBusy(target.agent_id, replicas);
    const busyKey = `${target.agent_id}/${replica}`;
    let started: { runId: string; began: Promise<void>; done: Promise<AgentRunOutcome> };
    try {
      started = this.deps.dispatcher.start(
        {
          agentId: target.agent_id,
          replica,
          trigger: 'webhook',
          triggerName: target.path,
          triggerRef: key !== undefined ? `${IDEMPOTENCY_REF}${key}` : runId,
          functionName: target.handler_function,
          input,
          orchestrationMode: (ORCHESTRATION_MODES as readonly string[]).includes(target.orchestration_mode)
            ? (target.orchestration_mode as WebhookOrchestrationMode)
            : 'direct',
          runId,
        },
        // Another node's replica: taken within the wait a sender allows for one being started here.
        { claimMs: WEBHOOK_REPLICA_START_WAIT_MS },
      );
    } catch (e) {
      if (key !== undefined) await this.deps.store.releaseKey(target.id, key, runId);
      if (signature) await this.deps.store.letGoSignature(target.id, runId);
      throw e;
    }
    this.busy.set(busyKey, (this.busy.get(busyKey) ?? 0) + 1);
    // Refused before it ran (the server stopping, the replica gone or lost): the key and the signature
    // are let go, so the sender's retry (here or on another node) runs; the answer is a 503.
    let notRun: DomainError | undefined;
    const done = started.done
      .catch((e: unknown): AgentRunOutcome => {
        // A typed refusal (the agent destroyed meanwhile, the server stopping) as it is; anything else only in the log.
        if (isDomainError(e)) {
          if (notRunRefusal(e)) notRun = e;
          return { runId, replica, status: notRun ? 'rejected' : 'failed', error: { type: e.type, message: e.message }, durationMs: 0 };
        }
        this.deps.logger.error({ err: e instanceof Error ? e.message : String(e), run_id: runId }, 'webhook run failed unexpectedly');
        const message = 'the run could not be completed; the operator can find details in the server log';
        return { runId, replica, status: 'failed', error: { type: 'internal_error', message }, durationMs: 0 };
      })
      .then(async (outcome) => {
        if (notRun) {
          if (key !== undefined) await this.deps.store.releaseKey(target.id, key, runId).catch(() => undefined);
          if (signature) await this.deps.store.letGoSignature(target.id, runId).catch(() => undefined);
        } else if (key !== undefined && !outcome.goesOnElsewhere) {
          // (A run this node stopped following keeps its key running: its home node records how it ended.)
          await keepOutcome(this.deps, target.id, key, outcome).catch((err: unknown) => {
            this.deps.logger.warn(
              { err: err instanceof Error ? err.message : String(err), run_id: runId },
              'keeping a webhook outcome failed',
            );
          });
        }
        return outcome;
      })
      .finally(() => {
        const n = (this.busy.get(busyKey) ?? 1) - 1;
        if (n > 0) this.busy.set(busyKey, n);
        else this.busy.delete(busyKey);
        this.running.delete(runId);
      });
    this.running.set(runId, done);
    const notRunAnswer = (e: DomainError): WebhookAnswer => ({
      ...error(503, 'unavailable', `${e.message}: retry the delivery later`, { run_id: runId }),
      headers: { 'retry-after': '5' },
    });
    // Answered once the replica took the job: a refusal before that is a 503 (the delivery is not lost).
    const refusal = await started.began.then(
      () => undefined,
      (e: unknown) => (notRunRefusal(e) ? e : undefined),
    );
    if (refusal) {
      await done;
      return notRunAnswer(refusal);
    }
    if (!wait) return { status: 202, body: { run_id: started.runId } };
    const answer = await this.waitFor(started.runId, done, limits);
    return notRun ? notRunAnswer(notRun) : answer;
  }

  private leastBusy(agentId: string, replicas: string[]): string {
    let best = replicas[0]!;
    for (const r of replicas) if ((this.busy.get(`${agentId}/${r}`) ?? 0) < (this.busy.get(`${agentId}/${best}`) ?? 0)) best = r;
    return best;
  }

  /** ?wait=true: the outcome, or after the bound 202 with the run still going. */
  private async waitFor(runId: string, done: Promise<AgentRunOutcome>, limits: TierLimits): Promise<WebhookAnswer> {
    const bound = waitSeconds(limits);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => (timer = setTimeout(resolve, bound * 1000, undefined)));
    try {
      const outcome = await Promise.race([done, late]);
      if (!outcome) return { status: 202, body: { run_id: runId, status: 'running', waited_s: bound } };
      return { status: 200, body: outcomeBody(runId, outcome) };
    } finally {
      clearTimeout(timer);
    }
  }

  /** A delivery whose Idempotency-Key an earlier one holds: that delivery's run, never a new one. */
  private async answerEarlier(
    target: WebhookTarget,
    key: string,
    earlier: DeliveryRow,
    wait: boolean,
    limits: TierLimits,
  ): Promise<WebhookAnswer> {
    const headers = { 'idempotent-replayed': 'true' };
    // Refused before it ran (seen between this delivery's look-up and its claim, or while it waited): retried, it runs.
    const notRunAnswer = (): WebhookAnswer => ({
      ...error(503, 'unavailable', 'the earlier delivery with this Idempotency-Key was not run: retry the delivery', {
        run_id: earlier.run_id,
      }),
      headers: { 'retry-after': '1' },
    });
    if (neverRan(earlier)) return notRunAnswer();
    if (!wait) return { status: 202, body: { run_id: earlier.run_id, duplicate: true }, headers };
    const local = this.running.get(earlier.run_id);
    if (local) return { ...(await this.waitFor(earlier.run_id, local, limits)), headers };
    // Run by another process (or ended): its row says when it ended, and how.
    const deadline = Date.now() + waitSeconds(limits) * 1000;
    let row: DeliveryRow | undefined = earlier;
    while (row && row.status === 'running' && Date.now() < deadline) {
      if (neverRan(row)) return notRunAnswer();
      // A run whose record ended without success while its key still says running (its node died,
      // or stopped following it, before writing the key): that end is the outcome, kept under the key.
      const ended = row.run_id === earlier.run_id ? endedByRecord(row) : undefined;
      if (ended) {
        const body = await keepOutcome(this.deps, target.id, key, ended).catch(() => outcomeBody(ended.runId, ended));
        return { status: 200, body: { ...body, duplicate: true }, headers };
      }
      await new Promise((resolve) => setTimeout(resolve, this.deps.pollMs ?? 250));
      row = await this.deps.store.delivery(target.id, key);
    }
    // The key let go while this waited: its run was refused before it ran (a key goes only then, or at expiry).
    if (!row || neverRan(row)) return notRunAnswer();
    // The key's run (another delivery's, should a retry have run in the refused one's place) and how it ended.
    if (row.outcome_sealed === null) return { status: 202, body: { run_id: row.run_id, status: 'running', duplicate: true }, headers };
    const outcome = JSON.parse(this.deps.cipher.open(['webhook-outcome', target.id, key], row.outcome_sealed)) as Record<string, unknown>;
    return { status: 200, body: { ...outcome, duplicate: true }, headers };
  }
}
