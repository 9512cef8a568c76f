/**
 * One started sandbox's run: the request sent, the server's timer and the run's abort signal armed,
 * the run ended as soon as its answer is in (or it exits), and everything it left (its record, or
 * what the platform saw go wrong) handed back for outcome.ts to interpret.
 */
import type { SandboxRequest } from '../core/sandbox.js';
import type { RunRecord } from './wire/channel.js';
import { stopHelper } from './host/spawn-helper.js';
import type { PreparedSandbox } from './launch/prepared.js';
import type { LauncherExit } from './launcher-pool.js';
import type { NetworkAttachment } from './host/network.js';
import { lineCapBytes } from './outcome.js';
import { takeOutputAtAnswer } from './wire/drain.js';
import { OUTPUT_AFTER_ANSWER_MS, REAP_BOUND_MS } from './policy/capacity.js';

export interface ExecuteDeps {
  /** Cgroup removals still running; close() waits for them. */
  pendingRemovals: Set<Promise<void>>;
  /** Tops the launcher pool up again (after the run, so the fork never delays one in progress). */
  refillLaunchers: () => void;
  log: (message: string) => void;
}

/**
 * What the run left, or a failure only the platform saw (the sandbox could not start or get its
 * network). `notStarted`: the sandbox was gone before its runner acked the request (see below), so
 * none of the run's code ran and the caller may run it in another sandbox.
 */
export type ExecuteResult = { record: RunRecord; notStarted: boolean } | { platform: string };

export async function execute(
  prepared: PreparedSandbox,
  request: SandboxRequest,
  payload: string,
  deps: ExecuteDeps,
): Promise<ExecuteResult> {
  const { limits } = request;
  const { log } = deps;
  const { child, cgroup, exited } = prepared.launcher;
  const { stdout, stderr, channel } = prepared;
  let attachment: NetworkAttachment | null = null;
  let timedOut = false;
  let hostKilled = false;
  let networkFailed = false;
  let exit: LauncherExit;
  let answeredFirst = false;
  let runStarted = performance.now();
  let escalation: NodeJS.Timeout | undefined;
  // The helper kills bubblewrap on SIGTERM and stays to reap the namespace, so no orphan or
  // zombie is left behind; SIGKILL follows only if it does not finish.
  const kill = () => {
    hostKilled = true;
    if (escalation) return;
    escalation = stopHelper(child, cgroup);
  };
  try {
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, limits.timeoutSeconds * 1000);
    // The server is stopping and its grace period is over.
    if (request.signal?.aborted) kill();
    else request.signal?.addEventListener('abort', kill, { once: true });
    // Room for the result (or a bridge call's input) plus the error envelope and a traceback.
    channel.begin(request.bridge, lineCapBytes(limits), kill);
    const networkState = await prepared.network;
    attachment = networkState.attachment;
    if (networkState.failed) {
      networkFailed = true;
      kill();
    }
    // A pooled sandbox's helper starts its own wall clock before the request is written, so no
    // user code runs without it even if this process stalls right after the write. Its runner is
    // up first (the helper then waits for this signal rather than dying of it).
    if (prepared.pooled && (channel.isReady || (await prepared.up)) && prepared.launcher.alive() && child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGUSR2');
      } catch {
        // it has just ended
      }
    }
    // The run's code is about to start: its processes take the runs' low CPU weight from here. A
    // sandbox started on the request path first finishes starting at the default weight (its
    // start-up is no tenant's code; at the low weight on a busy host it outlasted short timeouts):
    // its runner reads the request only once it is up, so waiting for that delays nothing. A
    // pooled one moved once its runner was up (see prepareSandbox); a second move would cost the
    // kernel's wait again.
    if (cgroup) {
      if (prepared.lowered) await prepared.lowered;
      else if (channel.isReady || (await prepared.up)) await cgroup.lowerCpu();
    }
    child.stdin!.end(payload);
    runStarted = performance.now();
    // With the answer in, the run is over: the runner flushed its output before answering, so it
    // is in the pipes already (read by the end of this turn of the event loop). Ending the run's
    // processes then beats waiting for the interpreter's own teardown by milliseconds.
    answeredFirst = cgroup ? await Promise.race([exited.then(() => false), channel.answered.then(nextTurn).then(() => true)]) : false;
    if (answeredFirst) {
      // SIGKILL, not waited for: no user code runs once it is delivered, and the interpreter's
      // memory teardown need not delay the answer.
      // The helper is spared: it reaps what the kill leaves and exits (no orphan, no zombie).
      cgroup!.killAll(child.pid);
      exit = { code: 0, signal: null, spawnFailed: false };
      // What the run printed before answering is in the pipes already (see wire/drain.ts).
      await takeOutputAtAnswer(
        [
          [child.stdout, stdout],
          [child.stderr, stderr],
        ],
        OUTPUT_AFTER_ANSWER_MS,
      );
    } else {
      exit = await exited;
      // Ended by the helper's own wall clock (the server's timer was late): a timeout all the same.
      if (!timedOut && channel.answer === null && performance.now() - runStarted >= limits.timeoutSeconds * 1000) timedOut = true;
    }
    clearTimeout(timer);
    clearTimeout(escalation);
  } finally {
    // The signal may outlive the run (a code-mode caller's, shared by its callees): its listener
    // would keep this run's sandbox and output alive as long (see zygote/child.ts).
    request.signal?.removeEventListener('abort', kill);
    (attachment as NetworkAttachment | null)?.close();
    cgroup?.killAll(answeredFirst ? child.pid : undefined);
    // The pool may start this sandbox's replacement now (warm-pool.ts: not beside the run).
    prepared.finish();
  }
  // After a kill the namespace may still be dying; a stopped run must not outlive its answer.
  const answer = channel.answer;
  const overflowed = channel.overflowed;
  const flooded = channel.flooded;
  if (timedOut || overflowed || flooded) await cgroup?.killUntilEmpty(REAP_BOUND_MS, { boost: true });
  const oomKilled = cgroup?.oomKilled() ?? false;
  // Removing the group need not delay the answer; close() waits for it.
  if (cgroup) {
    // After an answered run, once the helper has reaped what the kill left (bounded).
    const helperDone = answeredFirst ? Promise.race([exited, delay(REAP_BOUND_MS)]) : Promise.resolve();
    const removal = helperDone.then(() => cgroup.remove()).finally(() => deps.pendingRemovals.delete(removal));
    deps.pendingRemovals.add(removal);
  }
  if (exit.spawnFailed) {
    log('sandbox helper could not be started');
    return { platform: 'the sandbox could not start' };
  }
  // Between runs, so the fork never delays a run in progress.
  setImmediate(deps.refillLaunchers);
  if (networkFailed) {
    return { platform: 'the sandbox network could not be set up' };
  }
  // Whether the runner ever said ready: its line precedes any user code, so once the process is
  // gone it is in the pipe already (or fd 3 closes without it); bounded all the same.
  const ready = channel.isReady || (await Promise.race([channel.ready, delay(REAP_BOUND_MS).then(() => false)]));
  // Ended by nothing the host did, with fd 3 read to its end (bounded) and nothing on it after the
  // ready line, not even the ack the runner writes once it has its request, before any of the
  // run's code, or no ready line at all (its pre-started helper killed while it waited): the code
  // never ran (a pre-started sandbox killed while it waited, unseen). Any byte after ready, or a
  // fd 3 not read to its end, and the run counts as begun: never run again.
  if (!answeredFirst && !hostKilled && !exit.lost && !channel.closed) await Promise.race([channel.ended, delay(REAP_BOUND_MS)]);
  const notStarted = !answeredFirst && !hostKilled && !exit.lost && channel.closedBeforeStart;
  return { record: { stdout, stderr, answer, overflowed, flooded, timedOut, oomKilled, exit, ready }, notStarted };
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());
