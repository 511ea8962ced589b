/** `gpurun migrate JOB [--to HOST]`, `gpurun drain HOST`, `gpurun undrain HOST` (README: "Migration, drain and preemption"). */
import { isFinal, type Job } from '../protocol/jobs.ts';
import { parseArgs, usage } from './args.ts';
import { connect } from './connect.ts';
import { hostsTable } from './format.ts';

const MIGRATE_HELP = `Usage: gpurun migrate ID [--to HOST] [--no-wait]

Moves a running job to another host with its state, keeping its id and its log. How depends on the hosts
(gpurun hosts shows what each supports):
  transparent  with "migration": {"method": "transparent"} where both hosts have a working CRIU: the container's
               processes are checkpointed as they run (no help from the job), copied and restored on the new host.
  cooperative  otherwise: the job gets its checkpoint signal (it must have been submitted with --checkpoint-signal
               SIG), writes its state to $GPURUN_CHECKPOINT_DIR and exits 85; the folder is copied and the job goes
               on there with GPURUN_RESUME_FROM set.
Without --to the broker picks the host. Waits until the job runs on the new host; exit 1 when the move was given up
(the job runs on where it was) or when the new host could not start it (it goes on where it was, from its
checkpoint). --no-wait returns at once.
`;

/** How long the CLI waits for a move to end. */
const WAIT_MS = 15 * 60_000;

export async function migrateCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['broker', 'to'], flags: ['help', 'no-wait'], short: { h: 'help' } }, 'migrate');
  if (opts.help) {
    process.stdout.write(MIGRATE_HELP);
    return 0;
  }
  if (rest.length !== 1) throw usage('migrate', rest.length ? `expected one job id, got ${rest.length} arguments` : 'no job id given');
  const id = rest[0];
  const conn = await connect(opts.broker as string | undefined);
  try {
    const before = await conn.client.get(id);
    const n0 = before.attempt?.n ?? 1;
    let job = await conn.client.migrate(id, opts.to as string | undefined);
    process.stdout.write(`job ${id}: moving from ${job.move?.from ?? before.host} to ${job.move?.to ?? '?'} (${job.move?.cause ?? ''})\n`);
    if (opts['no-wait']) return 0;
    const until = Date.now() + WAIT_MS;
    for (;;) {
      if (job.move?.state === 'given_up') {
        process.stderr.write(`gpurun: the move of job ${id} was given up: ${job.move.detail}\n`);
        return 1;
      }
      if (!job.move && (job.attempt?.n ?? 1) > n0 && job.state === 'running') break;
      if (isFinal(job.state)) {
        process.stderr.write(`gpurun: job ${id} ended (${job.state}): ${job.reason}\n`);
        return 1;
      }
      if (Date.now() > until) {
        process.stderr.write(`gpurun: job ${id} is still moving; follow it with gpurun show ${id}\n`);
        return 1;
      }
      await new Promise((r) => setTimeout(r, 250));
      job = await conn.client.get(id);
    }
    if (job.host === before.host) {
      // The destination could not take it after its checkpoint: it went on where it was, from that checkpoint.
      const why = job.attempts?.find((a) => a.n === (job.attempt?.n ?? 1) - 1)?.reason ?? 'the destination could not start it';
      process.stderr.write(`gpurun: job ${id} was not moved; it runs on ${job.host} again (attempt ${job.attempt?.n}), from its checkpoint: ${why}\n`);
      return 1;
    }
    process.stdout.write(`job ${id} runs on ${job.host} (attempt ${job.attempt?.n}): ${movedWords(job, n0)}\n`);
    return 0;
  } finally {
    await conn.client.close();
  }
}

function movedWords(job: Job, n: number): string {
  return job.attempts?.find((a) => a.n === n)?.reason ?? 'moved';
}

const DRAIN_HELP = `Usage: gpurun drain HOST      (admin) no new jobs on HOST; its offline jobs that checkpoint move off, the rest run to their end
       gpurun undrain HOST    (admin) HOST takes jobs again
`;

export function drainCommand(on: boolean): (argv: string[]) => Promise<number> {
  const name = on ? 'drain' : 'undrain';
  return async (argv) => {
    const { opts, rest } = parseArgs(argv, { values: ['broker'], flags: ['help', 'json'], short: { h: 'help' } }, name);
    if (opts.help) {
      process.stdout.write(DRAIN_HELP);
      return 0;
    }
    if (rest.length !== 1) throw usage(name, 'expected one host name');
    const conn = await connect(opts.broker as string | undefined);
    try {
      const hosts = await conn.client.drain(rest[0], on);
      process.stdout.write(opts.json ? `${JSON.stringify(hosts, null, 2)}\n` : `${on ? `${rest[0]} is draining` : `${rest[0]} takes jobs again`}\n${hostsTable(hosts)}`);
      return 0;
    } finally {
      await conn.client.close();
    }
  };
}
