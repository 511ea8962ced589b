/** `gpurun ls | show | logs | cancel | hosts | token | broker`. */
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { constants as osConstants, userInfo } from 'node:os';
import { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { GpurunError, isGpurunError } from '../protocol/errors.ts';
import { idleWindowMs } from '../core/gpuUsage.ts';
import { isFinal, type Job } from '../protocol/jobs.ts';
import { parseArgs, usage } from './args.ts';
import { brokerNode, connect } from './connect.ts';
import { followLogs } from './follow.ts';
import { exitCodeOf, gpuUsageLines, hostsTable, jobsTable, showJob, tokensTable } from './format.ts';
import { filterJobs, jobFilter, lastLines } from './history.ts';
import { notifyEnd } from './notify.ts';
import { finalJob } from './run.ts';
import { gpurunHome } from '../protocol/paths.ts';

/** The idle window of `ls` and `show` (GPURUN_IDLE_AFTER: "10m" by default, "off" for never). */
function idleWindow(): number {
  const w = idleWindowMs(process.env.GPURUN_IDLE_AFTER);
  if (typeof w === 'string') throw new GpurunError('E_BAD_REQUEST', `GPURUN_IDLE_AFTER=${process.env.GPURUN_IDLE_AFTER}: ${w}`, { hint: 'Set it to a duration such as 10m or 90s, or to off.' });
  return w;
}

function idArg(rest: string[], cmd: string): string {
  if (rest.length !== 1) throw usage(cmd, rest.length ? `expected one job id, got ${rest.length} arguments` : 'no job id given');
  return rest[0];
}

const LS_HELP = `Usage: gpurun ls [--all] [--state S[,S]] [--since AGE] [--name TEXT] [--json]

Lists your jobs: queued and running ones, and those that ended in the last 24 hours.
  --all          every job you have run
  --state S,S    only jobs in these states: queued, starting, running, succeeded, failed, cancelled, timed_out,
                 lost; "active" (queued, starting, running) or "ended" (the rest)
  --since AGE    only jobs submitted in the last AGE, e.g. 7d, 12h, 90m (looks past the 24 hours)
  --name TEXT    only jobs whose name contains TEXT (any case)
  --json         machine-readable output
A running job's GPU USE column says "idle 12m" when its GPUs have all read 0 % for GPURUN_IDLE_AFTER (default 10m;
"off": never) of the job's time.
`;

export async function lsCommand(argv: string[]): Promise<number> {
  const { opts } = parseArgs(argv, { values: ['broker', 'state', 'since', 'name', 'limit'], flags: ['all', 'json', 'help'], short: { a: 'all', h: 'help' } }, 'ls');
  if (opts.help) {
    process.stdout.write(LS_HELP);
    return 0;
  }
  const limit = opts.limit === undefined ? (opts.json ? undefined : TABLE_LIMIT) : Number(opts.limit);
  if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) throw usage('ls', `--limit must be a whole number > 0, got "${opts.limit}"`);
  const filter = jobFilter({ ...(opts.state !== undefined ? { state: opts.state as string } : {}), ...(opts.since !== undefined ? { since: opts.since as string } : {}), ...(opts.name !== undefined ? { name: opts.name as string } : {}) });
  const filtered = filter.states || filter.sinceMs !== undefined || filter.name;
  const conn = await connect(opts.broker as string | undefined);
  // Page by page, filtered as pages come: thousands of jobs never sit in memory or in one string at once. Without
  // a filter the broker stops at the limit; with one, pages are read until enough jobs match.
  const query = { all: !!opts.all || filter.sinceMs !== undefined, ...(limit && !filtered ? { limit: limit + (opts.limit === undefined ? 1 : 0) } : {}) };
  if (opts.json) {
    let first = true;
    let n = 0;
    process.stdout.write('[');
    outer: for await (const page of conn.client.pages(query)) {
      for (const j of filterJobs(page, filter)) {
        if (limit !== undefined && n >= limit) break outer;
        process.stdout.write(`${first ? '\n' : ',\n'}${JSON.stringify(j, null, 2).replace(/^/gm, '  ')}`);
        first = false;
        n++;
      }
    }
    process.stdout.write(first ? ']\n' : '\n]\n');
  } else {
    const jobs: Job[] = [];
    for await (const page of conn.client.pages(query)) {
      jobs.push(...filterJobs(page, filter));
      if (jobs.length > limit!) break;
    }
    const more = opts.limit === undefined && jobs.length > TABLE_LIMIT;
    if (jobs.length > limit!) jobs.length = limit!;
    if (jobs.length === 0) process.stdout.write(filtered ? 'No jobs match.\n' : opts.all ? 'No jobs.\n' : 'No jobs in the last 24 hours (gpurun ls --all shows older ones).\n');
    else {
      // Running jobs with GPUs also show what those GPUs do now (the hosts' last probe).
      const hosts = jobs.some((j) => j.state === 'running' && j.gpuIndices.length) ? await conn.client.hosts().catch(() => []) : [];
      process.stdout.write(jobsTable(jobs, new Set(jobs.map((j) => j.owner)).size > 1, hosts, idleWindow()));
    }
    if (more) process.stdout.write(`(the newest ${TABLE_LIMIT} are shown; more with --limit N or --json)\n`);
  }
  await conn.client.close();
  return 0;
}

/** Jobs the table shows without --limit. */
const TABLE_LIMIT = 200;

const LOGS_HELP = `Usage: gpurun logs [-f] [--tail N] [--from OFFSET] ID

Prints a job's output (stdout and stderr, in order).
  -f, --follow     keep printing until the job ends; then print how it ended (unless it succeeded) and exit with
                   its exit code, as gpurun run does
  --tail N         only the last N lines (with -f: then go on following)
  --from OFFSET    start at this byte offset
`;

export async function logsCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['from', 'broker', 'tail'], flags: ['follow', 'help'], short: { f: 'follow', h: 'help', n: 'tail' } }, 'logs');
  if (opts.help) {
    process.stdout.write(LOGS_HELP);
    return 0;
  }
  const id = idArg(rest, 'logs');
  let from = opts.from === undefined ? 0 : Number(opts.from);
  if (!Number.isInteger(from) || from < 0) throw usage('logs', `--from must be a byte offset (a whole number ≥ 0), got "${opts.from}"`);
  const tail = opts.tail === undefined ? undefined : Number(opts.tail);
  if (tail !== undefined && (!Number.isInteger(tail) || tail < 0)) throw usage('logs', `--tail must be a number of lines (a whole number ≥ 0), got "${opts.tail}"`);
  const conn = await connect(opts.broker as string | undefined);
  if (tail !== undefined) {
    // What there is now, of which the last lines; following goes on from its end.
    const chunks: Buffer[] = [];
    for await (const { data, next } of conn.client.logs(id, from)) {
      chunks.push(data);
      from = next;
    }
    process.stdout.write(lastLines(Buffer.concat(chunks).toString('utf8'), tail));
  }
  let code = 0;
  if (opts.follow) {
    await followLogs(conn, id, from, (b) => void process.stdout.write(b), { onReconnect: (m) => process.stderr.write(`gpurun: ${m}\n`) });
    const job = await finalJob(conn, id);
    code = exitCodeOf(job);
    if (job.state !== 'succeeded') process.stderr.write(`gpurun: job ${id} ${job.state.replace('_', ' ')}: ${job.reason}\n`);
  } else if (tail === undefined) {
    for await (const { data } of conn.client.logs(id, from)) process.stdout.write(data);
  }
  await conn.client.close();
  return code;
}

/** `gpurun wait ID`: waits for a job to end and exits with its code (what --notify --detach runs in the background). */
export async function waitCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['broker'], flags: ['notify', 'quiet', 'help'], short: { h: 'help', q: 'quiet' } }, 'wait');
  if (opts.help) {
    process.stdout.write('Usage: gpurun wait [--notify] [--quiet] ID\n\nWaits until the job has ended, prints how it ended and exits with its exit code (as gpurun run).\n  --notify   then ring the terminal bell and send a desktop notification (notify-send)\n  --quiet    print nothing\n');
    return 0;
  }
  const id = idArg(rest, 'wait');
  const conn = await connect(opts.broker as string | undefined);
  let job = await conn.client.get(id);
  while (!isFinal(job.state)) {
    await new Promise((r) => setTimeout(r, 1000));
    job = await conn.client.get(id).catch(async (e: unknown) => {
      if (isGpurunError(e) && e.code === 'E_UNREACHABLE') return conn.revive().then(() => job);
      throw e;
    });
  }
  await conn.client.close();
  if (!opts.quiet) process.stderr.write(`gpurun: job ${id} ${job.state.replace('_', ' ')}${job.state === 'succeeded' ? '' : `: ${job.reason}`}\n`);
  if (opts.notify) notifyEnd(job);
  return exitCodeOf(job);
}

export async function showCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['broker'], flags: ['json', 'help'], short: { h: 'help' } }, 'show');
  if (opts.help) {
    process.stdout.write('Usage: gpurun show [--json] ID\n\nShows a job and each of its attempts: where it ran, how it ended (fault), and the evidence; for a running job\nalso what each of its GPUs does (utilisation and memory now, a bar per probe) and whether they sit idle\n(all at 0 % for GPURUN_IDLE_AFTER, default 10m; "off": never).\n  --json  machine-readable output (GET /v1/jobs/ID)\n');
    return 0;
  }
  const id = idArg(rest, 'show');
  const conn = await connect(opts.broker as string | undefined);
  const job = await conn.client.get(id);
  const hosts = !opts.json && job.host && job.gpuIndices.length ? await conn.client.hosts().catch(() => []) : [];
  process.stdout.write(opts.json ? `${JSON.stringify(job, null, 2)}\n` : showJob(job) + gpuUsageLines(job, hosts, Date.now(), idleWindow()));
  await conn.client.close();
  return 0;
}

export async function cancelCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['broker'], flags: ['help'], short: { h: 'help' } }, 'cancel');
  if (opts.help) {
    process.stdout.write('Usage: gpurun cancel ID\n\nStops a queued or running job (its whole process group or container).\n');
    return 0;
  }
  const id = idArg(rest, 'cancel');
  const conn = await connect(opts.broker as string | undefined);
  let job = await conn.client.cancel(id);
  for (let i = 0; !isFinal(job.state) && i < 300; i++) {
    await new Promise((r) => setTimeout(r, 100));
    job = await conn.client.get(id);
  }
  process.stdout.write(isFinal(job.state) ? `job ${id} ${job.state}: ${job.reason}\n` : `job ${id}: stop requested, still ${job.state}\n`);
  await conn.client.close();
  return 0;
}

export async function hostsCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['broker'], flags: ['json', 'help'], short: { h: 'help' } }, 'hosts');
  if (opts.help) {
    process.stdout.write('Usage: gpurun hosts [--json]\n       gpurun hosts clear HOST GPU   (admin: put a quarantined GPU back into service)\n\nShows each host: state, GPUs (free, quarantined, and which job uses each), CPUs and memory.\n');
    return 0;
  }
  if (rest.length && (rest[0] !== 'clear' || rest.length !== 3 || !/^\d+$/.test(rest[2]))) throw usage('hosts', 'expected: gpurun hosts [--json] or gpurun hosts clear HOST GPU');
  const conn = await connect(opts.broker as string | undefined);
  const hosts = rest.length ? await conn.client.clearGpu(rest[1], Number(rest[2])) : await conn.client.hosts();
  if (rest.length && !opts.json) process.stdout.write(`GPU ${rest[2]} of ${rest[1]} is back in service\n`);
  process.stdout.write(opts.json ? `${JSON.stringify(hosts, null, 2)}\n` : hostsTable(hosts));
  await conn.client.close();
  return 0;
}

const TOKEN_USAGE = `Usage: gpurun token create USER [--admin] [--expires 90d] [--config FILE]
       gpurun token list [--json] [--config FILE]
       gpurun token revoke ID|PREFIX|TOKEN [--config FILE]

Manages the broker's API tokens in its store. Run it on the broker machine.
  create   makes a token for USER and prints it once (--expires: it stops working after that long)
  list     every token: id, user, admin, created, expires, state (active, expired, revoked); never the token itself
  revoke   refuses the token from now on and ends its open streams within a second or two
`;

export async function tokenCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['config', 'expires'], flags: ['admin', 'json', 'help'], short: { h: 'help' } }, 'token');
  if (opts.help) {
    process.stdout.write(TOKEN_USAGE);
    return 0;
  }
  const [sub, ...args] = rest;
  const want = { create: 1, list: 0, revoke: 1 }[sub as string];
  if (want === undefined || args.length !== want) {
    throw usage('token', want === undefined ? 'expected: gpurun token create USER | list | revoke ID' : `gpurun token ${sub} takes ${want ? 'one argument' : 'no arguments'}`);
  }
  const mod = await loadBroker(['token', ...argv]);
  if (typeof mod === 'number') return mod;
  const { configFromFile, embeddedConfig, SqliteStore, createToken, expiryOf, findTokenRef, tokenView } = mod;
  const home = gpurunHome();
  const cfg = opts.config ? configFromFile(opts.config as string, home) : embeddedConfig(home);
  let expiresAt: string | null = null;
  if (opts.expires !== undefined) {
    if (sub !== 'create') throw usage('token', '--expires goes with gpurun token create');
    const e = expiryOf(opts.expires as string, new Date());
    if (typeof e !== 'string') throw e;
    expiresAt = e;
  }
  const store = new SqliteStore(join(cfg.dataDir, 'gpurun.db'));
  try {
    if (sub === 'create') {
      const token = createToken(store, args[0], !!opts.admin, expiresAt);
      mod.openAudit(cfg.dataDir);
      mod.audit({ action: 'token.create', by: userInfo().username, user: args[0], admin: !!opts.admin, ...(expiresAt ? { expiresAt } : {}) });
      process.stdout.write(`${token}\n`);
      process.stderr.write(`gpurun: token for ${args[0]}${opts.admin ? ' (admin)' : ''} created${expiresAt ? `, valid until ${expiresAt}` : ''}; it is shown only this once. Give it to the user as GPURUN_TOKEN.\n`);
    } else if (sub === 'list') {
      const tokens = store.listTokens().map((t) => tokenView(t));
      if (opts.json) process.stdout.write(`${JSON.stringify(tokens, null, 2)}\n`);
      else if (!tokens.length) process.stdout.write('No tokens.\n');
      else process.stdout.write(tokensTable(tokens));
    } else {
      const rec = findTokenRef(store, args[0]);
      const after = store.revokeToken(rec.id, new Date().toISOString())!;
      mod.openAudit(cfg.dataDir);
      mod.audit({ action: 'token.revoke', by: userInfo().username, user: after.user, token: after.id });
      process.stdout.write(`token ${after.id} of ${after.user} revoked${after.revokedAt !== rec.revokedAt ? '' : ` (already, at ${after.revokedAt})`}\n`);
    }
  } finally {
    store.close();
  }
  return 0;
}

export async function brokerCommand(argv: string[]): Promise<number> {
  const { opts } = parseArgs(argv, { values: ['config', 'idle-exit'], flags: ['embedded', 'help'], short: { h: 'help' } }, 'broker');
  if (opts.help) {
    process.stdout.write('Usage: gpurun broker [--config FILE]\n\nRuns a broker in the foreground (the README lists the config settings).\nWithout --config it runs the embedded default on a private Unix socket.\n');
    return 0;
  }
  const mod = await loadBroker(['broker', ...argv]);
  if (typeof mod === 'number') return mod;
  const { configFromFile, embeddedConfig, startBroker } = mod;
  const home = gpurunHome();
  const cfg = opts.config ? configFromFile(opts.config as string, home) : embeddedConfig(home);
  let idleExitMs: number | undefined;
  if (opts['idle-exit'] !== undefined) idleExitMs = Number(opts['idle-exit']) * 1000;
  else if (opts.embedded) idleExitMs = 30 * 60_000;
  // A broker whose own log cannot be written (its disk is full) keeps serving: a failed write to stderr is dropped.
  process.stderr.on('error', () => {});
  let running;
  try {
    running = await startBroker(cfg, idleExitMs ? { idleExitMs } : {});
  } catch (e) {
    // Two CLI calls raced to start the embedded broker: the other one won, which is what was wanted.
    if (opts.embedded && isGpurunError(e) && e.code === 'E_CONFLICT') return 0;
    throw e;
  }
  if (!opts.embedded) process.stderr.write(`gpurun: broker listening on ${running.address} (data in ${cfg.dataDir})\n`);
  if (running.fingerprint) process.stderr.write(`gpurun: TLS certificate fingerprint (SHA-256): ${running.fingerprint}\ngpurun: clients pin it with GPURUN_BROKER_FINGERPRINT=${running.fingerprint}\n`);
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = () => {
      if (stopping) return;
      stopping = true;
      void running.close().then(resolve);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    // Node resets signal dispositions at start (nohup's ignored SIGHUP included), so a hang-up stopped the broker
    // before too; now it stops it as cleanly as SIGTERM does.
    process.once('SIGHUP', stop);
    watchParent(stop);
  });
  return 0;
}

type BrokerModule = typeof import('../main.ts');

/**
 * The broker bundle (dist/broker.js), which needs node:sqlite. On an older Node the same command is run again with
 * the Node gpurun installed, and its exit code is returned instead. Node cannot exec(), so this process stands in
 * for the child: SIGTERM, SIGINT and SIGHUP are passed on to it, and this one exits when it does, with its status.
 * The child watches a pipe from this process and stops itself if this one dies without passing anything on
 * (SIGKILL), so a process manager that sees only this pid still controls the broker.
 */
async function loadBroker(argv: string[]): Promise<BrokerModule | number> {
  const node = brokerNode();
  if (node !== process.execPath) return runUnder(node, argv);
  return (await import(new URL('./broker.js', import.meta.url).href)) as BrokerModule;
}

const FORWARDED: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];

function runUnder(node: string, argv: string[]): Promise<number> {
  const child = spawn(node, [fileURLToPath(new URL('./cli.js', import.meta.url)), ...argv], { stdio: ['inherit', 'inherit', 'inherit', 'pipe'], env: { ...process.env, [PARENT_FD_ENV]: '3' } });
  const forward = (sig: NodeJS.Signals) => () => void child.kill(sig);
  const handlers = FORWARDED.map((sig) => [sig, forward(sig)] as const);
  for (const [sig, h] of handlers) process.on(sig, h);
  return new Promise((resolve) => {
    child.on('error', () => resolve(1));
    child.on('exit', (code, signal) => {
      for (const [sig, h] of handlers) process.off(sig, h);
      // Died of a signal: the same exit status a shell would report (128 + signal number).
      resolve(code ?? 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0));
    });
  });
}

/** Set in the environment of a broker run by runUnder(): the fd of the pipe from the parent. */
const PARENT_FD_ENV = 'GPURUN_PARENT_FD';

/** In a broker run by runUnder(): stop (as on SIGTERM) when the parent is gone and the pipe from it closes. */
export function watchParent(stop: () => void): void {
  const fd = Number(process.env[PARENT_FD_ENV]);
  delete process.env[PARENT_FD_ENV];
  if (!Number.isInteger(fd) || fd < 3) return;
  try {
    const s = new Socket({ fd, readable: true, writable: false });
    s.on('error', () => stop());
    s.on('end', () => stop());
    s.on('close', () => stop());
    s.resume();
    s.unref();
  } catch {
    /* not a pipe: nothing to watch */
  }
}
