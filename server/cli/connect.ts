/**
 * Which broker the CLI talks to: `--broker URL` or GPURUN_BROKER (with GPURUN_TOKEN), else the embedded default,
 * which is started on demand (one per data folder, shared by concurrent CLI calls) and found again on its socket.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { GpurunError } from '../protocol/errors.ts';
import { BrokerClient } from '../protocol/client.ts';
import { embeddedSocket, gpurunHome } from '../protocol/paths.ts';

export interface Connection {
  client: BrokerClient;
  embedded: boolean;
  /** Makes sure the broker is there again (restarts the embedded one); used when a stream breaks. */
  revive(): Promise<void>;
}

const START_TIMEOUT_MS = 20_000;

export async function connect(brokerFlag: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<Connection> {
  const address = brokerFlag ?? env.GPURUN_BROKER;
  if (address) {
    const client = new BrokerClient({ address, ...(env.GPURUN_TOKEN ? { token: env.GPURUN_TOKEN } : {}), ...(env.GPURUN_BROKER_FINGERPRINT ? { fingerprint: env.GPURUN_BROKER_FINGERPRINT } : {}) });
    return { client, embedded: false, revive: async () => {} };
  }
  const home = gpurunHome(env);
  const socket = embeddedSocket(home);
  const client = new BrokerClient({ address: `unix:${socket}` });
  const revive = () => ensureEmbedded(client, home, env);
  await revive();
  return { client, embedded: true, revive };
}

/** A Node new enough for the broker (node:sqlite): this one, or the one installed with gpurun. */
export function brokerNode(): string {
  const [maj, min] = process.versions.node.split('.').map(Number);
  if (maj > 22 || (maj === 22 && min >= 5)) return process.execPath;
  const bundled = join(dirname(fileURLToPath(import.meta.url)), '..', 'node_modules', 'node', 'bin', 'node');
  if (existsSync(bundled)) return bundled;
  throw new GpurunError('E_CONFIG', `the broker needs Node 22.5 or newer; this is Node ${process.versions.node}`, {
    hint: 'Run gpurun through npx or npm scripts in its folder (they use the Node it installs), or install Node 22.5+.',
  });
}

async function ensureEmbedded(client: BrokerClient, home: string, env: NodeJS.ProcessEnv): Promise<void> {
  if (await isUp(client)) return;
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const cli = fileURLToPath(new URL('./cli.js', import.meta.url));
  const out = openSync(join(home, 'broker.log'), 'a', 0o600);
  const child = spawn(brokerNode(), [cli, 'broker', '--embedded'], { detached: true, stdio: ['ignore', out, out], env: { ...env, GPURUN_HOME: home } });
  child.unref();
  const deadline = Date.now() + START_TIMEOUT_MS;
  let announced = false;
  while (Date.now() < deadline) {
    if (await isUp(client)) return;
    if (!announced && Date.now() > deadline - START_TIMEOUT_MS + 1500 && process.stderr.isTTY) {
      process.stderr.write('gpurun: starting the local broker…\n');
      announced = true;
    }
    await sleep(25);
  }
  throw new GpurunError('E_UNREACHABLE', `the local broker did not start within ${START_TIMEOUT_MS / 1000} s`, { hint: `See ${join(home, 'broker.log')}.` });
}

async function isUp(client: BrokerClient): Promise<boolean> {
  try {
    return (await client.health()).ok;
  } catch {
    return false;
  }
}
