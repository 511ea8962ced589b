/** `gpurun ls | show | logs | cancel | hosts | token | broker`. */
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { userInfo } from 'node:os';
import { fileURLToPath } from 'node:url';
import { isGpurunError } from '../protocol/errors.ts';
import { isFinal } from '../protocol/jobs.ts';
import { parseArgs, usage } from './args.ts';
import { brokerNode, connect } from './connect.ts';
import { followLogs } from './follow.ts';
import { hostsTable, jobsTable, showJob } from './format.ts';
import { gpurunHome } from '../protocol/paths.ts';

function idArg(rest: string[], cmd: string): string {
  if (rest.length !== 1) throw usage(cmd, rest.length ? `expected one job id, got ${rest.length} arguments` : 'no job id given');
  return rest[0];
}

export async function lsCommand(argv: string[]): Promise<number> {
  const { opts } = parseArgs(argv, { values: ['broker', 'limit'], flags: ['all', 'json', 'help'], short: { a: 'all', h: 'help' } }, 'ls');
  if (opts.help) {
    process.stdout.write('Usage: gpurun ls [--all] [--json] [--limit N]\n\nLists your jobs: queued and running ones, and those that ended in the last 24 hours.\n  --all       every job you have run\n  --json      machine-readable output (every job, page by page)\n  --limit N   at most N jobs, newest first (default for the table: 200)\n');
    return 0;
  }
  const limit = opts.limit === undefined ? (opts.json ? undefined : TABLE_LIMIT) : Number(opts.limit);
  if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) throw usage('ls', `--limit must be a whole number > 0, got "${opts.limit}"`);
  const conn = await connect(opts.broker as string | undefined);
  const query = { all: !!opts.all, ...(limit ? { limit: limit + (opts.limit === undefined ? 1 : 0) } : {}) };
  if (opts.json) {
    // Page by page: thousands of jobs never sit in memory or in one string at once.
    let first = true;
    process.stdout.write('[');
    for await (const page of conn.client.pages(query)) {
      for (const j of page) {
        process.stdout.write(`${first ? '\n' : ',\n'}${JSON.stringify(j, null, 2).replace(/^/gm, '  ')}`);
        first = false;
      }
    }
    process.stdout.write(first ? ']\n' : '\n]\n');
  } else {
    const jobs = await conn.client.list(query);
    const more = opts.limit === undefined && jobs.length > TABLE_LIMIT;
    if (more) jobs.length = TABLE_LIMIT;
    if (jobs.length === 0) process.stdout.write(opts.all ? 'No jobs.\n' : 'No jobs in the last 24 hours (gpurun ls --all shows older ones).\n');
    else process.stdout.write(jobsTable(jobs, new Set(jobs.map((j) => j.owner)).size > 1));
    if (more) process.stdout.write(`(the newest ${TABLE_LIMIT} are shown; more with --limit N or --json)\n`);
  }
  await conn.client.close();
  return 0;
}

/** Jobs the table shows without --limit. */
const TABLE_LIMIT = 200;

export async function logsCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['from', 'broker'], flags: ['follow', 'help'], short: { f: 'follow', h: 'help' } }, 'logs');
  if (opts.help) {
    process.stdout.write('Usage: gpurun logs [-f] [--from OFFSET] ID\n\nPrints a job\'s output (stdout and stderr, in order).\n  -f, --follow     keep printing until the job ends\n  --from OFFSET    start at this byte offset\n');
    return 0;
  }
  const id = idArg(rest, 'logs');
  const from = opts.from === undefined ? 0 : Number(opts.from);
  if (!Number.isInteger(from) || from < 0) throw usage('logs', `--from must be a byte offset (a whole number ≥ 0), got "${opts.from}"`);
  const conn = await connect(opts.broker as string | undefined);
  if (opts.follow) {
    await followLogs(conn, id, from, (b) => void process.stdout.write(b), { onReconnect: (m) => process.stderr.write(`gpurun: ${m}\n`) });
  } else {
    for await (const { data } of conn.client.logs(id, from)) process.stdout.write(data);
  }
  await conn.client.close();
  return 0;
}

export async function showCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['broker'], flags: ['json', 'help'], short: { h: 'help' } }, 'show');
  if (opts.help) {
    process.stdout.write('Usage: gpurun show [--json] ID\n\nShows a job and each of its attempts: where it ran, how it ended (fault), and the evidence.\n  --json  machine-readable output (GET /v1/jobs/ID)\n');
    return 0;
  }
  const id = idArg(rest, 'show');
  const conn = await connect(opts.broker as string | undefined);
  const job = await conn.client.get(id);
  process.stdout.write(opts.json ? `${JSON.stringify(job, null, 2)}\n` : showJob(job));
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
  const { opts } = parseArgs(argv, { values: ['broker'], flags: ['json', 'help'], short: { h: 'help' } }, 'hosts');
  if (opts.help) {
    process.stdout.write('Usage: gpurun hosts [--json]\n\nShows each host: state, GPUs (free, and which job uses each), CPUs and memory.\n');
    return 0;
  }
  const conn = await connect(opts.broker as string | undefined);
  const hosts = await conn.client.hosts();
  process.stdout.write(opts.json ? `${JSON.stringify(hosts, null, 2)}\n` : hostsTable(hosts));
  await conn.client.close();
  return 0;
}

export async function tokenCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['config'], flags: ['admin', 'help'], short: { h: 'help' } }, 'token');
  if (opts.help || rest[0] !== 'create' || rest.length !== 2) {
    if (!opts.help) throw usage('token', 'expected: gpurun token create USER [--admin] [--config FILE]');
    process.stdout.write('Usage: gpurun token create USER [--admin] [--config FILE]\n\nCreates a token for USER in the broker\'s store and prints it once. Run it on the broker machine.\n');
    return 0;
  }
  const mod = await loadBroker(['token', ...argv]);
  if (typeof mod === 'number') return mod;
  const { configFromFile, embeddedConfig, SqliteStore, createToken } = mod;
  const home = gpurunHome();
  const cfg = opts.config ? configFromFile(opts.config as string, home) : embeddedConfig(home);
  const store = new SqliteStore(join(cfg.dataDir, 'gpurun.db'));
  try {
    const token = createToken(store, rest[1], !!opts.admin);
    mod.openAudit(cfg.dataDir);
    mod.audit({ action: 'token.create', by: userInfo().username, user: rest[1], admin: !!opts.admin });
    process.stdout.write(`${token}\n`);
    process.stderr.write(`gpurun: token for ${rest[1]}${opts.admin ? ' (admin)' : ''} created; it is shown only this once. Give it to the user as GPURUN_TOKEN.\n`);
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
    const stop = () => void running.close().then(resolve);
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  return 0;
}

type BrokerModule = typeof import('../main.ts');

/**
 * The broker bundle (dist/broker.js), which needs node:sqlite. On an older Node the same command is run again with
 * the Node gpurun installed, and its exit code is returned instead.
 */
async function loadBroker(argv: string[]): Promise<BrokerModule | number> {
  const node = brokerNode();
  if (node !== process.execPath) {
    const r = spawnSync(node, [fileURLToPath(new URL('./cli.js', import.meta.url)), ...argv], { stdio: 'inherit' });
    return r.status ?? 1;
  }
  return (await import(new URL('./broker.js', import.meta.url).href)) as BrokerModule;
}
