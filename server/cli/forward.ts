/**
 * `gpurun forward JOB PORT[:LOCAL]`: listens on 127.0.0.1:LOCAL and carries each connection made there to port PORT
 * of the running job, through the broker (one upgrade per connection, protocol/interactive.ts), as kubectl
 * port-forward does. Runs until the job ends or Ctrl+C.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { BrokerClient } from '../protocol/client.ts';
import { openForward } from '../protocol/forwardClient.ts';
import { isFinal } from '../protocol/jobs.ts';
import { GpurunError } from '../protocol/errors.ts';
import { parsePortSpec } from '../core/interactive.ts';
import { parseArgs, usage } from './args.ts';
import { connect } from './connect.ts';

export const FORWARD_HELP = `Usage: gpurun forward JOB PORT[:LOCAL]

Forwards port PORT of the running job JOB to 127.0.0.1:LOCAL on this machine (LOCAL defaults to PORT; 0 picks a free
one), through the broker: e.g. gpurun forward JOB 6006 for a TensorBoard, then open http://127.0.0.1:6006/. Runs until
the job ends or Ctrl+C. Only the job's owner can do this; every connection is in the broker's audit log. The server in
the job must listen on 0.0.0.0 (Docker hosts) or 127.0.0.1 (hosts without Docker, this machine).
  --broker URL  broker address (default: $GPURUN_BROKER, token in $GPURUN_TOKEN)
`;

const JOB_POLL_MS = 2_000;

export async function forwardCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['broker'], flags: ['help'], short: { h: 'help' } }, 'forward');
  if (opts.help) {
    process.stdout.write(FORWARD_HELP);
    return 0;
  }
  if (rest.length !== 2) throw usage('forward', `expected JOB and PORT[:LOCAL], got ${rest.length} ${rest.length === 1 ? 'word' : 'words'}`);
  const [id, spec] = rest;
  const { port, local } = parsePortSpec(spec);
  const conn = await connect(opts.broker as string | undefined);
  try {
    const job = await conn.client.get(id);
    if (job.state !== 'running') throw new GpurunError('E_CONFLICT', `job ${id} is ${job.state.replace('_', ' ')}, not running`, { hint: isFinal(job.state) ? `Its output stays readable: gpurun logs ${id}` : `Wait until it runs: gpurun show ${id}` });
    return await forwardPort(conn.client, id, port, local);
  } finally {
    await conn.client.close();
  }
}

async function forwardPort(client: BrokerClient, id: string, port: number, local: number): Promise<number> {
  const say = (s: string) => void process.stderr.write(`gpurun: ${s}\n`);
  const fwd = await openForward(client, id, port, local, say);
  process.stdout.write(`forwarding 127.0.0.1:${fwd.local} to port ${port} of job ${id} (Ctrl+C stops)\n`);
  let onSigint = () => {};
  const stopped = new Promise<void>((r) => (onSigint = r));
  process.on('SIGINT', onSigint);
  try {
    for (;;) {
      if (await Promise.race([sleep(JOB_POLL_MS).then(() => false), stopped.then(() => true)])) return 0;
      const job = await client.get(id).catch(() => undefined);
      if (job && isFinal(job.state)) {
        say(`job ${id} ${job.state.replace('_', ' ')}; stopped forwarding`);
        return 0;
      }
    }
  } finally {
    process.off('SIGINT', onSigint);
    fwd.close();
  }
}
