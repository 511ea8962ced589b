/**
 * Keeps the job list current from the broker's event stream (no polling): on connect it opens `GET /v1/events`,
 * then lists the jobs, then applies every event. A dropped stream reconnects with a backoff and lists again.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import * as vscode from 'vscode';
import { GpurunError } from '../server/protocol/errors.ts';
import type { Job, JobEvent } from '../server/protocol/jobs.ts';
import type { Broker } from './brokerClient.ts';
import { HOLD_ROWS_MS, JobList } from './core/jobTree.ts';
import type { Log } from './log.ts';

export type SyncState = { kind: 'connecting' } | { kind: 'connected'; embedded: boolean; address: string } | { kind: 'error'; error: unknown };

export class JobSync implements vscode.Disposable {
  readonly jobs = new JobList();
  state: SyncState = { kind: 'connecting' };
  private readonly changed = new vscode.EventEmitter<Job | undefined>();
  /** A job changed (the job), or everything may have (undefined: after a list or a state change). */
  readonly onDidChange = this.changed.event;
  private ac: AbortController | undefined;
  private loop: Promise<void> | undefined;
  /** Called once per error kind, so a broker that stays down does not raise a message every few seconds. */
  onError: (err: unknown) => void = () => {};
  private readonly broker: Broker;
  private readonly log: Log;

  constructor(broker: Broker, log: Log) {
    this.broker = broker;
    this.log = log;
  }

  /** (Re)starts the stream. */
  restart(): void {
    this.ac?.abort();
    const ac = new AbortController();
    this.ac = ac;
    this.loop = this.run(ac.signal);
  }

  private setState(s: SyncState): void {
    this.state = s;
    this.changed.fire(undefined);
  }

  private async run(signal: AbortSignal): Promise<void> {
    let backoff = 500;
    let lastErrorCode: string | undefined;
    while (!signal.aborted) {
      try {
        const conn = await this.broker.connection();
        if (signal.aborted) return;
        // Open the stream first, so no change between the list and the stream is missed.
        const it = conn.client.events(signal)[Symbol.asyncIterator]();
        let pending = it.next();
        pending.catch(() => {});
        const jobs = await conn.client.list();
        this.jobs.reset(jobs);
        this.setState({ kind: 'connected', embedded: conn.embedded, address: conn.address });
        this.log.info(`connected to ${conn.address}: ${jobs.length} job(s)`);
        backoff = 500;
        lastErrorCode = undefined;
        for (;;) {
          const r: IteratorResult<JobEvent> = await pending;
          if (r.done) break;
          if (r.value.type === 'job' && this.jobs.apply(r.value.job)) this.changed.fire(r.value.job);
          pending = it.next();
        }
        if (!signal.aborted) this.log.warn('the broker closed the event stream; reconnecting');
      } catch (err) {
        if (signal.aborted) return;
        const code = err instanceof GpurunError ? err.code : 'E_INTERNAL';
        if (code !== lastErrorCode) {
          this.log.error(`job events: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
          this.setState({ kind: 'error', error: err });
          this.onError(err);
          lastErrorCode = code;
        }
        if (code === 'E_UNAUTHORIZED' || code === 'E_FORBIDDEN' || code === 'E_CONFIG') {
          // Needs a person (sign in, settings); wait for a settings change (restart()).
          return;
        }
      }
      await sleep(backoff, undefined, { signal }).catch(() => {});
      backoff = Math.min(backoff * 2, 10_000);
      await this.broker.connection().then((c) => c.revive()).catch(() => {});
    }
  }

  /** A job this window learned of first hand (a submit answer): shown at once, before its event arrives. */
  upsert(job: Job): void {
    if (this.jobs.apply(job)) this.changed.fire(job);
  }

  /** Jobs this window asked to cancel: their end is no news (no notification). */
  readonly cancelledHere = new Set<string>();

  /** Keeps the sidebar's rows where they are for a moment (before an inline action), then redraws. */
  holdRows(): void {
    this.jobs.holdRows(Date.now());
    setTimeout(() => !this.disposed && this.changed.fire(undefined), HOLD_ROWS_MS + 50);
  }

  /** Redraws every view of the jobs (after a filter change). */
  redraw(): void {
    this.changed.fire(undefined);
  }

  private disposed = false;

  /** Waits for the stream loop to finish (after dispose). */
  async stopped(): Promise<void> {
    await this.loop;
  }

  dispose(): void {
    this.disposed = true;
    this.ac?.abort();
    this.changed.dispose();
  }
}
