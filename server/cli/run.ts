/**
 * `gpurun run [options] -- CMD [ARGS...]`: submits a job, shows its place in the queue while it waits, streams its
 * output, and exits with its exit code. Ctrl+C asks whether to cancel or detach (without a terminal: detach).
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createInterface, type Interface } from 'node:readline/promises';
import { GpurunError } from '../protocol/errors.ts';
import { attemptWords, isFinal, type Job, type SubmitRequest } from '../protocol/jobs.ts';
import { applyDirective, parseDirectives } from '../core/directives.ts';
import { JOB_OPTIONS, optionsHelp, parseOptionText } from '../core/jobOptions.ts';
import { parseArgs, usage } from './args.ts';
import { connect, type Connection } from './connect.ts';
import { followLogs } from './follow.ts';
import { exitCodeOf } from './format.ts';
import { jobEnv } from './env.ts';
import { loadRunConfig } from './runConfig.ts';
import { notifyEnd, spawnNotifyWaiter } from './notify.ts';
import { serveJobWorkspace, workspaceFolder, type ServedWorkspace } from './serveWorkspace.ts';
import { holdCommand } from '../protocol/interactiveJob.ts';
import { defaultName } from '../core/submit.ts';
import { runInteractive } from './runInteractive.ts';
import { openForward, type OpenForward } from '../protocol/forwardClient.ts';
import { parsePortSpec } from '../core/interactive.ts';

export const RUN_HELP = `Usage: gpurun run [options] -- CMD [ARGS...]

Runs CMD as a job, streams its output, and exits with its exit code.

Options:
${optionsHelp()}
  --workspace DIR       the folder the job runs in (default: the current folder)
  --env NAME=VALUE      set a variable in the job (repeatable)
  --env NAME            pass NAME with the value it has in this shell (an error if it is not set here)
  --env-file FILE       variables from a .env file: NAME=VALUE lines, # comments, optional "export ", quotes;
                        nothing is expanded (repeatable; later files and --env win)
  --config NAME         the settings (and command, unless one follows "--") of config NAME in the workspace's
                        gpurun.json; options given here win
  --detach, -d          print the job id and return at once
  -i, --stdin           an interactive job: CMD reads this terminal's (or pipe's) input; it runs in the job through
                        exec, its output comes to this terminal and into the job's log, and the job ends with it
  -t, --tty             the same under a terminal end to end (implies -i; -it is the same): gpurun run -it -- python3
  -p, --publish PORT[:LOCAL]
                        forward port PORT of the job to 127.0.0.1:LOCAL here while this gpurun is attached (LOCAL
                        defaults to PORT, 0 picks a free one; repeatable), as gpurun forward does: e.g. -p 6006
  --serve-workspace     serve the workspace's files from this machine, through the broker, to the GPU host (for a
                        broker that runs elsewhere and cannot read them); gpurun run must stay attached meanwhile
  --notify              when the job ends, ring the terminal bell and send a desktop notification (notify-send,
                        where there is one); with --detach, a background waiter does it
  --broker URL          broker address (default: $GPURUN_BROKER, else the local embedded broker)

The job's environment: what the broker gives every job (see the README, "A job's environment"), its GPUs in
CUDA_VISIBLE_DEVICES, then --env-file and --env. Variables of your shell are NOT passed on, except with the local
broker PATH, VIRTUAL_ENV, CONDA_PREFIX and PYTHONPATH (so an activated virtualenv is used); pass others with --env NAME.

A "# gpurun: gpus=2 gpu-type=A100 time=2h restarts=3 ..." line at the top of the script sets its defaults; options win.
Exit codes: the last attempt's own; 124 timed out; 125 could not start; 130 cancelled; 75 lost.
`;

function out(s: string): void {
  process.stderr.write(`gpurun: ${s}\n`);
}

/** The options of `gpurun run`: every job option of the schema, and the client's own (shell completion reads it). */
export const RUN_OPTIONS = {
  values: [...JOB_OPTIONS.map((o) => o.key), 'workspace', 'env', 'env-file', 'config', 'broker', 'publish'],
  flags: ['detach', 'help', 'serve-workspace', 'notify', 'stdin', 'tty'],
  repeat: ['env', 'env-file', 'publish'],
  short: { d: 'detach', h: 'help', i: 'stdin', t: 'tty', it: 'tty', ti: 'tty', p: 'publish' },
  stopAtPositional: true,
};

export async function runCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, RUN_OPTIONS, 'run');
  if (opts.help) {
    process.stdout.write(RUN_HELP);
    return 0;
  }
  const workspace = workspaceFolder((opts.workspace as string) ?? process.cwd());
  // A named configuration of gpurun.json: its settings, and its command unless one is given after "--".
  const config = opts.config !== undefined ? loadRunConfig(workspace, opts.config as string) : undefined;
  const command = rest.length ? rest : (config?.command ?? []);
  if (command.length === 0) throw usage('run', opts.config !== undefined ? `config "${opts.config}" has no command, and none was given after "--"` : 'no command given');

  const serve = !!opts['serve-workspace'];
  if (serve && opts.detach) {
    throw new GpurunError('E_BAD_REQUEST', '--serve-workspace and --detach do not go together: this gpurun serves the workspace and must stay attached while the job runs', { hint: 'Leave out --detach, or leave out --serve-workspace when the broker can read the workspace itself.' });
  }

  const publish = ((opts.publish as string[] | undefined) ?? []).map(parsePortSpec);
  if (publish.length && opts.detach) throw usage('run', '-p and --detach do not go together: the ports are forwarded while this gpurun is attached (later: gpurun forward JOB PORT)');
  const interactive = opts.tty || opts.stdin ? { tty: !!opts.tty } : undefined;
  if (interactive && opts.detach) throw usage('run', `-${interactive.tty ? 't' : 'i'} and --detach do not go together: an interactive job runs while this terminal is attached`);
  const req: SubmitRequest = { command, workspace, ...(serve ? { workspaceFrom: 'client' as const } : {}) };
  applyDirectives(req, command, workspace);
  if (config) Object.assign(req, { ...config, command });
  applyOptionFlags(req, opts);
  const env = { ...(config?.env ?? {}), ...jobEnv((opts['env-file'] as string[]) ?? [], (opts.env as string[]) ?? []) };

  const conn = await connect(opts.broker as string | undefined);
  if (serve && conn.embedded) {
    await conn.client.close();
    throw new GpurunError('E_BAD_REQUEST', '--serve-workspace is for a broker that runs elsewhere; the local broker reads the workspace itself', { hint: 'Pass --broker URL (or set GPURUN_BROKER), or leave out --serve-workspace.' });
  }
  // The local broker runs jobs with the caller's PATH, so the python3 of an activated venv is the one that runs.
  if (conn.embedded) {
    for (const k of ['PATH', 'VIRTUAL_ENV', 'CONDA_PREFIX', 'PYTHONPATH']) if (process.env[k] !== undefined && env[k] === undefined) env[k] = process.env[k]!;
  }
  if (Object.keys(env).length) req.env = env;
  // An interactive job runs a holder; the command runs in it through exec (core/interactiveJob.ts).
  if (interactive) Object.assign(req, { command: holdCommand(req.command), name: req.name ?? defaultName(command) });

  const job = await conn.client.submit(req);
  if (opts.detach) {
    process.stdout.write(`${job.id}\n`);
    if (opts.notify) spawnNotifyWaiter(job.id, opts.broker as string | undefined);
    await conn.client.close();
    return 0;
  }
  out(`job ${job.id} submitted (${job.name}, queue ${job.queue})`);
  let served: ServedWorkspace | undefined;
  const forwards: OpenForward[] = [];
  try {
    for (const p of publish) {
      const f = await openForward(conn.client, job.id, p.port, p.local, out);
      forwards.push(f);
      out(`forwarding 127.0.0.1:${f.local} to port ${p.port} of job ${job.id} (http://127.0.0.1:${f.local}/ once it listens)`);
    }
  } catch (e) {
    for (const f of forwards) f.close();
    await conn.client.cancel(job.id).catch(() => {});
    await conn.client.close();
    throw e;
  }
  if (serve) {
    try {
      served = await serveJobWorkspace(conn.client, job.id, workspace, out);
    } catch (e) {
      await conn.client.cancel(job.id).catch(() => {});
      await conn.client.close();
      throw e;
    }
  }
  try {
    return await (interactive ? runInteractive(conn, job, command, interactive, out) : attach(conn, job, !!opts.notify));
  } finally {
    served?.close();
    for (const f of forwards) f.close();
  }
}

/** Sets the job options given as flags, each parsed by the schema (a bad value is a usage error naming the flag). */
function applyOptionFlags(req: SubmitRequest, opts: Record<string, unknown>): void {
  for (const o of JOB_OPTIONS) {
    const text = opts[o.key];
    if (typeof text !== 'string') continue;
    const r = parseOptionText(o, text);
    if ('error' in r) throw usage('run', `--${o.key}${r.error.startsWith('must') ? ' ' : ': '}${r.error}`);
    // Sizes and durations go as typed: the broker parses them with the same schema, and its messages quote them.
    (req as unknown as Record<string, unknown>)[o.field] = o.type === 'size' || o.type === 'duration' ? text : r.value;
  }
}

/** Defaults from `# gpurun:` lines of the script the command runs, if it is a file in the workspace. */
function applyDirectives(req: SubmitRequest, command: string[], workspace: string): void {
  const script = command.slice(0, 3).map((a) => resolve(workspace, a)).find((p) => /\.(py|sh)$/.test(p) && existsSync(p));
  if (!script) return;
  const { directive: d, errors } = parseDirectives(readFileSync(script, 'utf8').slice(0, 64 * 1024));
  if (errors.length) {
    const e = errors[0];
    throw new GpurunError('E_BAD_REQUEST', `${script}:${e.line + 1}:${e.column + 1}: ${e.message}`, { hint: 'Fix the "# gpurun:" line, or remove it.' });
  }
  applyDirective(req, d);
}

/** A job that is still queued this long after it was submitted is said to wait; a quicker start says nothing. */
const QUIET_QUEUE_MS = 1000;

/**
 * Streams a job to its end; returns the CLI exit code. Ctrl+C opens a prompt (cancel or detach); while it is open
 * the job's output is held back, so it does not run into the prompt line, and shown after it.
 */
async function attach(conn: Connection, job0: Job, notify: boolean): Promise<number> {
  const id = job0.id;
  const submitted = Date.now();
  const ac = new AbortController();
  let detached = false;
  let prompt: { rl: Interface; ac: AbortController } | undefined;
  let held: Buffer[] = [];
  let lastStatus = '';
  let stagedShown = false;
  // A Slurm cluster job: what staging copied, once (also for a job that ended before any poll saw it staged).
  const showStaged = (job: Job) => {
    const st = job.cluster?.staged;
    if (!st || stagedShown) return;
    stagedShown = true;
    out(`workspace staged on cluster ${job.cluster!.name}: ${st.copied} file${st.copied === 1 ? '' : 's'} copied, ${st.unchanged} unchanged${st.removed ? `, ${st.removed} removed` : ''} (${st.ms} ms)`);
  };
  const status = (job: Job) => {
    showStaged(job);
    let line = '';
    if (job.state === 'queued') {
      if (Date.now() - submitted < QUIET_QUEUE_MS) return;
      line = `queued${job.queuePosition ? ` (position ${job.queuePosition} in ${job.queue})` : ''}: ${job.reason}`;
    }
    // Once placed, say where (also for a job so quick that it is already over when asked).
    else if (job.host) line = `running on ${job.host} (${job.gpuIndices.length ? `GPU ${job.gpuIndices.join(',')}` : 'no GPU'})${attemptWords(job.attempt) ? ` · ${attemptWords(job.attempt)}` : ''}`;
    if (line && line !== lastStatus && !prompt) {
      out(line);
      lastStatus = line;
    }
  };
  const detach = () => {
    detached = true;
    ac.abort();
  };
  const closePrompt = () => {
    if (!prompt) return;
    prompt.ac.abort();
    prompt.rl.close();
    prompt = undefined;
    for (const b of held) process.stdout.write(b);
    held = [];
  };
  const onSigint = async () => {
    if (prompt || !process.stdin.isTTY) {
      closePrompt();
      return detach();
    }
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    // In the prompt, Ctrl+C arrives as a key, not a signal: a second one detaches.
    rl.on('SIGINT', () => {
      process.stderr.write('\n');
      closePrompt();
      detach();
    });
    const p = { rl, ac: new AbortController() };
    prompt = p;
    let answer: string;
    try {
      answer = await rl.question(`\ngpurun: cancel job ${id}? [y] cancel, [N] detach and leave it running: `, { signal: p.ac.signal });
    } catch {
      return; // closed: the job ended, or a second Ctrl+C
    }
    closePrompt();
    if (/^y(es)?$/i.test(answer.trim())) {
      out(`cancelling ${id}…`);
      // The stream goes on until the job has stopped; its final state is printed below.
      await conn.client.cancel(id).catch((e: Error) => out(`cancel failed: ${e.message}`));
    } else detach();
  };
  process.on('SIGINT', onSigint);

  // Show queue and start changes while the output streams; a restarted job goes back to the queue, so this watches
  // to the end (often while it waits, seldom while it runs).
  let streamDone = false;
  let wake: (() => void) | undefined;
  const watcher = (async () => {
    let job = job0;
    while (!ac.signal.aborted && !streamDone && !isFinal(job.state)) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, job.state === 'running' ? 2_000 : 300);
        wake = () => (clearTimeout(t), r());
      });
      if (streamDone) break;
      job = await conn.client.get(id).catch(() => job);
      if (!isFinal(job.state)) status(job);
    }
  })();

  try {
    let first = true;
    await followLogs(
      conn,
      id,
      0,
      async (b) => {
        // Say where it runs before the first line of its output.
        if (first) {
          first = false;
          status(await conn.client.get(id).catch(() => job0));
        }
        if (prompt) held.push(b);
        else await writeOut(b);
      },
      { signal: ac.signal, onReconnect: out },
    );
  } finally {
    process.off('SIGINT', onSigint);
    streamDone = true;
    wake?.();
  }
  await watcher;
  if (detached) {
    out(`detached; job ${id} goes on. Follow it again with: gpurun logs -f ${id}`);
    await conn.client.close();
    return 0;
  }
  // The job ended while the prompt was open: the question is moot.
  if (prompt) {
    process.stderr.write('\n');
    closePrompt();
  }
  const job = await finalJob(conn, id);
  await conn.client.close();
  showStaged(job);
  // A Slurm cluster job: what came back from the cluster's staged workspace.
  const back = job.cluster?.returned;
  if (back && (back.copied || back.keptNewer.length)) {
    out(`brought back ${back.copied} file${back.copied === 1 ? '' : 's'} the job wrote${back.keptNewer.length ? `; kept your newer edit of ${back.keptNewer.join(', ')} (the job's version stays on the cluster)` : ''}`);
  }
  const code = exitCodeOf(job);
  if (job.state !== 'succeeded') out(`job ${id} ${job.state.replace('_', ' ')}: ${job.reason}`);
  if (notify) notifyEnd(job);
  return code;
}

/** The job once it is final (its output has ended; the state follows within moments). */
export async function finalJob(conn: Connection, id: string): Promise<Job> {
  let job = await conn.client.get(id);
  for (let i = 0; !isFinal(job.state) && i < 50; i++) {
    await new Promise((r) => setTimeout(r, 100));
    job = await conn.client.get(id);
  }
  return job;
}

function writeOut(b: Buffer): Promise<void> | void {
  if (process.stdout.write(b)) return;
  return new Promise((r) => process.stdout.once('drain', () => r()));
}
