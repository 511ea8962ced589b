/**
 * The pool as the language server knows it: `GET /v1/pool` once at start, again shortly after every job event of the
 * broker's event stream (a GPU taken or given back), and on a short poll (hosts that come and go send no event).
 * While the broker is unreachable the last snapshot stays, with its age; `onChange` fires only when what a user
 * would see changes (the pool's content, or online/offline), never on a poll that brought the same.
 */
import type { BrokerClient } from '../protocol/client.ts';
import type { PoolSnapshot } from '../protocol/pool.ts';
import type { PoolView } from './providers.ts';

export interface PoolFeedOptions {
  /** Poll interval, ms. */
  pollMs: number;
  /** Delay between a job event and the refetch it causes (events come in bursts), ms. */
  eventDelayMs: number;
}

export class PoolFeed {
  view: PoolView = { online: false };
  onChange: () => void = () => {};
  private readonly client: BrokerClient;
  private readonly opts: PoolFeedOptions;
  private readonly ac = new AbortController();
  private timer?: NodeJS.Timeout;
  private pending?: NodeJS.Timeout;
  private last = '';
  private fetching?: Promise<void>;
  private again = false;
  /** Set when the broker refused the token: nothing more is asked. */
  private stopped = false;
  /** Resolves once the first fetch has answered or failed. */
  readonly ready: Promise<void>;

  constructor(client: BrokerClient, opts: Partial<PoolFeedOptions> = {}) {
    this.client = client;
    this.opts = { pollMs: 1000, eventDelayMs: 50, ...opts };
    this.ready = this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.opts.pollMs);
    this.timer.unref();
    void this.follow();
  }

  /** Fetches the pool now (a fetch in flight is followed by one more, so no change is missed). */
  refresh(): Promise<void> {
    if (this.fetching) {
      this.again = true;
      return this.fetching;
    }
    this.fetching = (async () => {
      do {
        this.again = false;
        await this.fetchOnce();
      } while (this.again && !this.ac.signal.aborted);
    })().finally(() => (this.fetching = undefined));
    return this.fetching;
  }

  private async fetchOnce(): Promise<void> {
    let snap: PoolSnapshot | undefined;
    let problem: string | undefined;
    try {
      snap = await this.client.pool();
    } catch (err) {
      const e = err as { code?: string; message?: string };
      // A broker that answers but refuses (a token it does not know) is named as such, not as unreachable.
      problem = e.code === 'E_UNREACHABLE' ? undefined : (e.message ?? String(err));
      // A refused token stays refused (the server is started again with new credentials): asking on would count as a
      // failed sign-in each time, and the broker then refuses every request from this address for a while.
      if (refusesToken(e.code)) this.stopAsking();
    }
    if (this.ac.signal.aborted) return;
    const wasOnline = this.view.online;
    if (!snap) {
      if (wasOnline || this.view.problem !== problem) {
        const { problem: _p, ...rest } = this.view;
        this.view = { ...rest, online: false, ...(problem ? { problem } : {}) };
        this.onChange();
      }
      return;
    }
    const { at: _at, ...content } = snap;
    const key = JSON.stringify(content);
    const changed = key !== this.last || !wasOnline;
    this.last = key;
    this.view = { snapshot: snap, online: true, takenAt: Date.now() };
    if (changed) this.onChange();
  }

  /** Follows the event stream for as long as the feed lives, reconnecting after a second when it breaks. */
  private async follow(): Promise<void> {
    while (!this.ac.signal.aborted && !this.stopped) {
      try {
        for await (const _ev of this.client.events(this.ac.signal)) {
          clearTimeout(this.pending);
          this.pending = setTimeout(() => void this.refresh(), this.opts.eventDelayMs);
        }
      } catch (err) {
        /* unreachable or aborted: the poll marks it offline */
        if (refusesToken((err as { code?: string }).code)) return this.stopAsking();
      }
      await new Promise((r) => setTimeout(r, 1000).unref());
    }
  }

  /** Stops the poll and the event stream; the last view (and its problem) stays. */
  private stopAsking(): void {
    clearInterval(this.timer);
    this.stopped = true;
  }

  close(): void {
    this.ac.abort();
    clearInterval(this.timer);
    clearTimeout(this.pending);
    void this.client.close().catch(() => {});
  }
}

/** Error codes that say the broker refuses these credentials (asking again cannot help). */
function refusesToken(code: string | undefined): boolean {
  return code === 'E_UNAUTHORIZED' || code === 'E_FORBIDDEN';
}
