/**
 * Malformed requests against a real broker process: at least 10,000 of them across every endpoint, written as raw
 * bytes on TCP (bad methods, paths with %00 and //, bad JSON, wrong types, huge numbers, huge headers, bad
 * Upgrade, truncated bodies, bad tokens). The broker must not crash, answer no 5xx, and every error it answers
 * must be JSON {code, message, hint}. A seeded generator makes a failure reproducible.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { join } from 'node:path';
import { cleanup, createToken, scratch, startBrokerProcess, stopBroker, workspaceIn, type BrokerProc } from '../support/harness.ts';

const TOTAL = 10_000;
const PARALLEL = 16;

/** xorshift32: the same seed gives the same requests. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

interface Raw {
  bytes: Buffer;
  /** Close our side after sending (a truncated body). */
  halfClose: boolean;
  head: boolean;
}

function generator(seed: number, token: string, jobId: string) {
  const r = rng(seed);
  const pick = <T,>(a: readonly T[]): T => a[Math.floor(r() * a.length)];
  const ws = '/tmp';
  const methods = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'FOO', 'G@T', 'get', 'CONNECT', ''];
  const ids = [jobId, 'zzzzzzzz', 'a'.repeat(40), '%00', '..', '', 'ABC', '%2e%2e', jobId + '%00'];
  const paths = () => [
    '/v1/health', '/v1/whoami', '/v1/jobs', '/v1/hosts', '/v1/events',
    `/v1/jobs/${pick(ids)}`, `/v1/jobs/${pick(ids)}/cancel`, `/v1/jobs/${pick(ids)}/logs`, `/v1/jobs/${pick(ids)}/workspace`,
    `/v1/jobs/${jobId}/logs?offset=${pick(['-1', '1e400', '99999999999999999999999', 'abc', '0', '%00', ''])}`,
    `/v1/jobs?limit=${pick(['0', '-5', '1e9', 'x', '1000', '1001', ''])}&before=${pick(['!!', jobId, 'zz', '%00', ''])}&all=${pick(['1', 'yes', ''])}`,
    '//%00/v1/health', '//v1/jobs', '/v1//jobs', '/v1/jobs/', '/%00', '/v1/%00', '/v1/jobs/%ff%fe', '*', 'http://evil.example/v1/health',
    '/v2/jobs', '/', '/v1', `/v1/jobs/${jobId}/logs/../../../etc/passwd`, '/v1/jobs?' + 'a=1&'.repeat(500), '/' + 'x'.repeat(9000), '/v1/hosts#frag', '/v1/whoami?\u00e9',
  ];
  const values: unknown[] = [null, true, -1, 0, 1e400, -1e400, 2 ** 53 + 1, 1e308, '', 'x'.repeat(2000), [], {}, [[[[1]]]], { a: { b: {} } }, '\u0000', '--privileged', '9'.repeat(400), 3.5, NaN];
  const body = (): string => {
    switch (Math.floor(r() * 7)) {
      case 0: return pick(['{', '}', '[', 'nul', '{"command":', '{"a":1,}', "{'a':1}", '\u0000\u0001', '{"command":["true"]', '']);
      case 1: return JSON.stringify(pick(values));
      case 2: {
        const o: Record<string, unknown> = { command: ['true'], workspace: ws, gpus: 0 };
        o[pick(['command', 'workspace', 'gpus', 'gpuType', 'cpus', 'memory', 'time', 'queue', 'image', 'env', 'name', 'backend', 'workspaceFrom', 'unknown'])] = pick(values);
        return JSON.stringify(o);
      }
      case 3: return JSON.stringify({ command: pick([['true', pick(values)], [], [''], 'true', [1]]), workspace: pick([ws, 'relative', '', '/nonexistent/\u0000']), time: pick(['25d', '9'.repeat(400), '-1s', '1h', 1e400]), memory: pick(['1e400G', '-1G', '1G', 'lots']) });
      case 4: return '['.repeat(5000) + ']'.repeat(5000);
      case 5: return JSON.stringify({ command: ['true'], workspace: ws, env: pick([{ A: 1 }, { '1A': 'x' }, { A: 'x\u0000' }, { ['A'.repeat(300)]: 'x' }, 'env', []]) });
      default: return JSON.stringify({ command: ['true'], workspace: ws, gpus: 0, queue: 'offline' }).slice(0, Math.floor(r() * 60));
    }
  };
  const auth = () => pick([`Bearer ${token}`, `Bearer ${token}`, 'Bearer', 'Bearer gpr_wrong', `Basic ${token}`, 'Bearer ' + 'a'.repeat(5000), `bearer  ${token} extra`, '', 'Bearer \u00e9']);
  return (): Raw => {
    const method = pick(methods);
    const path = pick(paths());
    const lines = [`${method} ${path} HTTP/1.1`, 'Host: broker'];
    const a = auth();
    if (a) lines.push(`Authorization: ${a}`);
    const kind = r();
    if (kind < 0.08) lines.push(`X-Big: ${'h'.repeat(pick([9000, 20000, 70000]))}`);
    else if (kind < 0.12) for (let i = 0; i < 300; i++) lines.push(`X-Many-${i}: v`);
    else if (kind < 0.2) lines.push('Connection: Upgrade', `Upgrade: ${pick(['gpurun-sftp', 'websocket', '', 'h2c', '\u0001'])}`);
    else if (kind < 0.23) lines.push('Bad Header Without Colon');
    else if (kind < 0.25) lines.push('Transfer-Encoding: chunked', 'Content-Length: 5');
    let b = '';
    let halfClose = false;
    if (method === 'POST' || method === 'PUT' || r() < 0.1) {
      b = body();
      lines.push(`Content-Type: ${pick(['application/json', 'application/json', 'text/plain', 'application/json; charset=utf-8', ''])}`);
      const declared = Buffer.byteLength(b);
      if (r() < 0.1) {
        lines.push(`Content-Length: ${declared + 50}`);
        halfClose = true;
      } else lines.push(`Content-Length: ${pick([String(declared), String(declared), String(declared), '-1', 'abc', '99999999999999999999'])}`);
    }
    lines.push('Connection: close');
    return { bytes: Buffer.from(`${lines.join('\r\n')}\r\n\r\n${b}`, 'latin1'), halfClose, head: method === 'HEAD' };
  };
}

interface Outcome {
  status?: number;
  body: string;
  streamed: boolean;
}

function send(port: number, req: Raw): Promise<Outcome> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    const s = connect({ port, host: '127.0.0.1' });
    const finish = (streamed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      s.destroy();
      const text = Buffer.concat(chunks).toString('utf8');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      const sep = text.indexOf('\r\n\r\n');
      resolve({ ...(m ? { status: Number(m[1]) } : {}), body: sep >= 0 ? text.slice(sep + 4) : '', streamed });
    };
    // Event streams and followed logs never end by themselves: 1.5 s of answer is enough to judge them.
    const t = setTimeout(() => finish(true), 1500);
    s.on('connect', () => {
      s.write(req.bytes);
      if (req.halfClose) s.end();
    });
    s.on('data', (d) => chunks.push(d));
    s.on('close', () => finish(false));
    s.on('error', () => finish(false));
  });
}

/** The body of a (non-chunked) error answer, as JSON, or undefined. */
function errorJson(o: Outcome): { code?: unknown; message?: unknown; hint?: unknown } | undefined {
  try {
    return JSON.parse(o.body);
  } catch {
    return undefined;
  }
}

describe('team broker: request fuzz', function () {
  this.timeout(180_000);
  let dir: string;
  let broker: BrokerProc;

  before(async () => {
    dir = scratch();
    broker = await startBrokerProcess(join(dir, 'b'), { hosts: [{ name: 'local', type: 'local', cpus: 2, memory: '2G' }], limits: { authFailuresPerMinute: 0, submitsPerMinute: 0, maxQueuedJobs: 0 } });
  });
  after(async () => {
    await stopBroker(broker);
    cleanup(dir);
  });

  it(`answers ${TOTAL} malformed requests with no crash, no 5xx, and JSON {code, message, hint} errors`, async () => {
    const token = await createToken(broker, 'fuzzer');
    const sub = await fetch(`${broker.url}/v1/jobs`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ command: ['true'], workspace: workspaceIn(dir), gpus: 0 }) });
    const jobId = ((await sub.json()) as { id: string }).id;
    const port = Number(new URL(broker.url).port);
    const next = generator(Number(process.env.FUZZ_SEED ?? 20261201), token, jobId);
    const t0 = Date.now();
    const stats = { tried: 0, answered: 0, fiveXx: 0, badBodies: 0, noAnswer: 0 };
    const bad: string[] = [];
    const worker = async () => {
      while (stats.tried < TOTAL) {
        stats.tried++;
        const req = next();
        const o = await send(port, req);
        if (o.status === undefined) {
          stats.noAnswer++;
          // Only a request we cut short ourselves may go unanswered.
          if (!req.halfClose) bad.push(`no answer to: ${req.bytes.toString('latin1').slice(0, 200)}`);
          continue;
        }
        stats.answered++;
        if (o.status >= 500) {
          stats.fiveXx++;
          bad.push(`${o.status} to: ${req.bytes.toString('latin1').slice(0, 200)} → ${o.body.slice(0, 200)}`);
        }
        if (o.status >= 400 && !req.head) {
          const e = errorJson(o);
          if (!e || typeof e.code !== 'string' || typeof e.message !== 'string' || typeof e.hint !== 'string') {
            stats.badBodies++;
            bad.push(`${o.status} without {code, message, hint} to: ${req.bytes.toString('latin1').slice(0, 160)} → ${o.body.slice(0, 160)}`);
          }
        }
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
    const alive = broker.proc.exitCode === null && (await fetch(`${broker.url}/v1/health`)).ok;
    console.log(`      figure: ${stats.tried} malformed requests in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${stats.fiveXx} 5xx, ${alive ? 0 : 1} crashes, ${stats.badBodies} errors without {code, message, hint}, ${stats.noAnswer} cut short by the client`);
    assert.ok(alive, `the broker died:\n${broker.log().slice(-3000)}`);
    assert.deepEqual(bad.slice(0, 10), []);
    assert.ok(stats.tried >= TOTAL);
    assert.doesNotMatch(broker.log(), /"msg":"request failed"/, 'no internal error was logged');
  });
});
