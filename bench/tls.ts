/**
 * TLS cost (`npm run bench -- tls`): submit → first output line with a fresh client (so a fresh connection and,
 * over TLS, a full handshake) against a broker on plain HTTP and one with its self-signed certificate (pinned), in
 * the same run; plus the handshake alone (health request on a new connection).
 */
import { join } from 'node:path';
import { BrokerClient } from '../server/protocol/client.ts';
import { cleanup, createToken, scratch, startBrokerProcess, stopBroker, type BrokerProc } from '../test/support/harness.ts';
import { fmt, percentile, timeIt } from './_support.ts';

const RUNS = 15;

async function firstLineMs(b: BrokerProc, token: string, ws: string): Promise<number> {
  return timeIt(async () => {
    const c = new BrokerClient({ address: b.url, token, ...(b.fingerprint ? { fingerprint: b.fingerprint } : {}) });
    const job = await c.submit({ command: ['echo', 'first line'], workspace: ws, gpus: 0 });
    for await (const chunk of c.logs(job.id, 0, { follow: true })) if (chunk.data.includes(10)) break;
    await c.close();
  });
}

async function healthMs(b: BrokerProc): Promise<number> {
  return timeIt(async () => {
    const c = new BrokerClient({ address: b.url, ...(b.fingerprint ? { fingerprint: b.fingerprint } : {}) });
    await c.health();
    await c.close();
  });
}

export async function run(): Promise<void> {
  const dir = scratch('gpurun-bench-tls-');
  const brokers: BrokerProc[] = [];
  try {
    const hosts = [{ name: 'local', type: 'local', cpus: 4, memory: '4G' }];
    const plain = await startBrokerProcess(join(dir, 'plain'), { hosts, limits: { submitsPerMinute: 0 } });
    brokers.push(plain);
    const tls = await startBrokerProcess(join(dir, 'tls'), { hosts, tls: true, limits: { submitsPerMinute: 0 } });
    brokers.push(tls);
    const tokens = [await createToken(plain, 'bench'), await createToken(tls, 'bench')];
    const first: number[][] = [[], []];
    const hello: number[][] = [[], []];
    // Interleaved, so both see the same machine load.
    for (let i = 0; i < RUNS; i++) {
      for (const k of [0, 1]) {
        first[k].push(await firstLineMs(brokers[k], tokens[k], dir));
        hello[k].push(await healthMs(brokers[k]));
      }
    }
    const p50 = (a: number[]) => percentile(a, 50);
    console.log(`  submit → first line, fresh connection (p50 of ${RUNS}): plain HTTP ${fmt(p50(first[0]))}, TLS ${fmt(p50(first[1]))} (×${(p50(first[1]) / p50(first[0])).toFixed(2)}, +${fmt(p50(first[1]) - p50(first[0]))})`);
    console.log(`  one request on a new connection (p50): plain HTTP ${fmt(p50(hello[0]))}, TLS ${fmt(p50(hello[1]))} (handshake ≈ +${fmt(p50(hello[1]) - p50(hello[0]))})`);
  } finally {
    for (const b of brokers) await stopBroker(b);
    cleanup(dir);
  }
}
