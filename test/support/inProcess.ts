/**
 * The in-process seam: a Broker and its HTTP app over the memory store, a scripted backend and a clock the test
 * moves by hand, so restart policy, time limits across attempts and the classifier's use are tested in milliseconds
 * without sshd, Docker or Slurm. The app is served on an ephemeral loopback port of this process.
 */
import { createServer, type Server } from 'node:http';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { Broker, type BrokerDeps } from '../../server/broker.ts';
import { buildApp } from '../../server/app.ts';
import { validateConfig, type BrokerConfig } from '../../server/config.ts';
import type { AttemptEnd, AttemptEvents, AttemptPlacement, AttemptSpec, Backend, PlaceRequest } from '../../server/core/backend.ts';
import type { Clock, TimerHandle } from '../../server/core/clock.ts';
import type { Allocation } from '../../server/core/scheduler.ts';
import type { StoredAttempt, StoredJob } from '../../server/core/store.ts';
import type { ValidSubmit } from '../../server/core/submit.ts';
import { LogFiles } from '../../server/logs/logFiles.ts';
import { silentLogger } from '../../server/logger.ts';
import { MemoryStore } from '../../server/store/memory.ts';

/** A clock that moves only when the test says so; due timers fire in order. */
export class ManualClock implements Clock {
  private t: number;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private seq = 0;

  constructor(start = Date.parse('2026-12-01T10:00:00.000Z')) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  after(ms: number, fn: () => void): TimerHandle {
    const id = ++this.seq;
    this.timers.push({ at: this.t + Math.max(0, ms), fn, id });
    return { cancel: () => (this.timers = this.timers.filter((x) => x.id !== id)) };
  }

  /** Moves time on by `ms`, firing what falls due, then lets the broker's passes run. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      const next = this.timers.filter((x) => x.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!next) break;
      this.timers = this.timers.filter((x) => x !== next);
      this.t = next.at;
      next.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

/** Lets pending promise callbacks and setImmediate passes run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await tick();
}

/** One start of an attempt, as the scripted backend saw it. */
export interface ScriptedRun {
  jobId: string;
  n: number;
  host: string;
  gpuIndices: number[];
  env: Record<string, string>;
  logOffset: number;
  ev: AttemptEvents;
  stopped: boolean;
  discarded: boolean;
  end?: (e: AttemptEnd) => void;
}

/**
 * A host pool in miniature: first-fit over named hosts with a number of GPUs each, honouring the avoid set; every
 * attempt runs until the test ends it. `print` writes output as a runtime's follower would: only while the attempt
 * is current. `stop` ends the attempt as a TERM would (exit 143).
 */
export class ScriptedBackend implements Backend {
  readonly name: string;
  readonly runs: ScriptedRun[] = [];
  /** Host → GPU count. */
  hosts: Record<string, number>;
  private readonly logs: LogFiles;

  constructor(logs: LogFiles, hosts: Record<string, number>, name = 'hosts') {
    this.logs = logs;
    this.hosts = hosts;
    this.name = name;
  }

  defaults(): { gpus: number } {
    return { gpus: 0 };
  }

  admit(_v: ValidSubmit): void {}

  place(queued: PlaceRequest[], holding: Allocation[]): AttemptPlacement[] {
    const used = new Map<string, number>();
    for (const a of holding) used.set(a.host, (used.get(a.host) ?? 0) + Math.max(1, a.gpuIndices.length));
    const out: AttemptPlacement[] = [];
    for (const q of queued) {
      const candidates = Object.keys(this.hosts).filter((h) => !q.avoid.hosts.includes(h));
      const host = candidates.find((h) => (used.get(h) ?? 0) < Math.max(1, this.hosts[h]));
      if (!host) continue;
      used.set(host, (used.get(host) ?? 0) + 1);
      out.push({ jobId: q.job.id, host, gpuIndices: q.job.resources.gpus ? [0] : [] });
    }
    return out;
  }

  async start(a: AttemptSpec, ev: AttemptEvents): Promise<Record<string, unknown>> {
    this.runs.push({ jobId: a.job.id, n: a.n, host: a.host!, gpuIndices: a.gpuIndices, env: a.env, logOffset: a.logOffset, ev, stopped: false, discarded: false });
    ev.running({ host: a.host, reason: `running on ${a.host}` });
    return { scripted: a.job.id, n: a.n };
  }

  wait(job: StoredJob, attempt: StoredAttempt, signal: AbortSignal, ev: AttemptEvents): Promise<AttemptEnd> {
    let run = this.run(job.id, attempt.n);
    if (!run) {
      // Followed again after a broker restart.
      run = { jobId: job.id, n: attempt.n, host: attempt.host!, gpuIndices: attempt.gpuIndices, env: {}, logOffset: attempt.logOffset, ev, stopped: false, discarded: false };
      this.runs.push(run);
    }
    run.ev = ev;
    const r = run;
    return new Promise((resolve, reject) => {
      r.end = resolve;
      signal.addEventListener('abort', () => reject(signal.reason));
    });
  }

  async stop(job: StoredJob, attempt: StoredAttempt): Promise<void> {
    const run = this.run(job.id, attempt.n);
    if (!run) return;
    run.stopped = true;
    run.end?.({ exitCode: 143, signal: null, endedAt: new Date().toISOString() });
  }

  async recover(_job: StoredJob, attempt: StoredAttempt): Promise<Record<string, unknown> | null> {
    return attempt.runtimeRef;
  }

  async discard(job: StoredJob, attempt: StoredAttempt): Promise<void> {
    const run = this.run(job.id, attempt.n);
    if (run) run.discarded = true;
  }

  knows(host: string): boolean {
    return host in this.hosts;
  }

  describe(): Record<string, never> {
    return {};
  }

  close(): void {}

  /** The latest run of attempt `n` (or the latest attempt) of a job. */
  run(jobId: string, n?: number): ScriptedRun | undefined {
    return this.runs.filter((r) => r.jobId === jobId && (n === undefined || r.n === n)).pop();
  }

  /** Output of the attempt, written only while it is the job's current one (as every follower must). */
  print(jobId: string, n: number, text: string): boolean {
    const run = this.run(jobId, n);
    if (!run?.ev.isCurrent()) return false;
    appendFileSync(this.logs.path(jobId), text);
    return true;
  }

  async finish(jobId: string, end: AttemptEnd, n?: number): Promise<void> {
    const run = this.run(jobId, n);
    if (!run?.end) throw new Error(`no attempt of ${jobId} waits for its end`);
    run.end(end);
    await settle();
  }
}

export interface InProcess {
  broker: Broker;
  store: MemoryStore;
  logs: LogFiles;
  clock: ManualClock;
  backend: ScriptedBackend;
  config: BrokerConfig;
  /** The HTTP app on an ephemeral port of this process. */
  url: string;
  /** A new Broker over the same store, logs, backend and clock (as after a broker restart). */
  restart(backends?: Backend[]): Promise<void>;
  close(): Promise<void>;
}

export async function inProcessBroker(opts: { config?: Record<string, unknown>; hosts?: Record<string, number>; store?: MemoryStore } = {}): Promise<InProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'gpurun-inproc-'));
  const config = validateConfig({ restartBackoff: { first: '5s', max: '1m' }, ...opts.config }, '(test)', dir, dir);
  const store = opts.store ?? new MemoryStore();
  const logs = new LogFiles(join(dir, 'logs'));
  const clock = new ManualClock();
  const backend = new ScriptedBackend(logs, opts.hosts ?? { h1: 1, h2: 1 });
  const deps = (backends: Backend[]): BrokerDeps => ({ config, store, logs, log: silentLogger, baseEnv: {}, clock, backends, hosts: { probeAll: async () => false, info: () => [] } });
  let broker = new Broker(deps([backend]));
  await broker.start();
  const handler = (...a: Parameters<ReturnType<typeof buildApp>>) => buildApp({ broker, store, logs, log: silentLogger, version: 'test', trustedPrincipal: { user: 'alice', admin: false } })(...a);
  const server: Server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address() as { port: number };
  const ip: InProcess = {
    get broker() {
      return broker;
    },
    store,
    logs,
    clock,
    backend,
    config,
    url: `http://127.0.0.1:${addr.port}`,
    async restart(backends = [backend]) {
      broker.close();
      broker = new Broker(deps(backends));
      await broker.start();
      await settle();
    },
    async close() {
      broker.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await settle();
  return ip;
}
