/** exec and forward: what a user may ask (hostile input), the frame wire, the argv builders, the interactive-job scripts. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAttachRequest, parseExecRequest, parsePortSpec, validateExecRequest } from '../../server/core/interactive.ts';
import { Duplex } from 'node:stream';
import { ExecSessions } from '../../server/interactive/sessions.ts';
import { dataFrames, encodeExecRequest, encodeFrame, exitStatus, FRAME, FrameReader, MAX_FRAME, REPLAY_BYTES } from '../../server/protocol/interactive.ts';
import { containerAddressArgs, dockerExecArgs, localPtyArgv, localResizeArgv, parseContainerAddress, processExecArgs } from '../../server/interactive/argv.ts';
import { holdCommand, holdRunCommand } from '../../server/protocol/interactiveJob.ts';

describe('exec requests', () => {
  it('takes an argv and a terminal of a bounded size', () => {
    assert.deepEqual(parseExecRequest(encodeExecRequest({ command: ['bash', '-l'], tty: true, rows: 40, cols: 120, term: 'xterm-256color' })), { command: ['bash', '-l'], tty: true, rows: 40, cols: 120, term: 'xterm-256color' });
    assert.deepEqual(validateExecRequest({ command: ['sh'], tty: true }), { command: ['sh'], tty: true, rows: 24, cols: 80, term: 'xterm' });
    assert.deepEqual(validateExecRequest({ command: ['ls'], tty: false }), { command: ['ls'] });
  });

  const refused: Array<[unknown, RegExp]> = [
    [{ command: 'rm -rf /' }, /non-empty array of strings \(an argv, not a shell line\)/],
    [{ command: [] }, /non-empty array/],
    [{ command: [''] }, /command\[0\] \(the program\) is empty/],
    [{ command: ['sh', 3] }, /command\[1\] must be a string/],
    [{ command: ['sh', 'a\0b'] }, /command\[1\] contains a NUL byte/],
    [{ command: ['x'.repeat(200_000)] }, /at most 131072/],
    [{ command: ['sh'], tty: 'yes' }, /tty must be true or false/],
    [{ command: ['sh'], tty: true, rows: 0 }, /rows must be a whole number from 1 to 10000/],
    [{ command: ['sh'], tty: true, cols: 1e9 }, /cols must be/],
    [{ command: ['sh'], tty: true, term: 'xterm; rm -rf /' }, /term must be a terminal type/],
    [{ command: ['sh'], tty: true, term: '-e' }, /term must be a terminal type/],
    [{ command: ['sh'], env: { A: '1' } }, /unknown field "env"/],
    [['sh'], /must be a JSON object/],
    [null, /must be a JSON object/],
  ];
  for (const [raw, msg] of refused) {
    it(`refuses ${JSON.stringify(raw)?.slice(0, 60)}`, () => assert.throws(() => validateExecRequest(raw), (e: Error & { code?: string }) => e.code === 'E_BAD_REQUEST' && msg.test(e.message)));
  }

  it('refuses a header that is missing or not base64url JSON', () => {
    assert.throws(() => parseExecRequest(undefined), /the exec request is missing/);
    assert.throws(() => parseExecRequest('%%%'), /not base64url JSON/);
  });
});

describe('ports of gpurun forward', () => {
  it('reads PORT and PORT:LOCAL', () => {
    assert.deepEqual(parsePortSpec('6006'), { port: 6006, local: 6006 });
    assert.deepEqual(parsePortSpec('8888:18888'), { port: 8888, local: 18888 });
    assert.deepEqual(parsePortSpec('8888:0'), { port: 8888, local: 0 });
  });
  for (const bad of ['0', '65536', '', 'http', '80:', '80:x', '-1', '1e3', '80:70000', ':80']) {
    it(`refuses "${bad}"`, () => assert.throws(() => parsePortSpec(bad), /must be a port number from [01] to 65535/));
  }
});

describe('exec frames', () => {
  it('reassemble across any split', () => {
    const wire = Buffer.concat([encodeFrame(FRAME.stdout, 'hello'), encodeFrame(FRAME.stderr, Buffer.from([0, 1, 2])), encodeFrame(FRAME.exit, '{"code":3,"signal":null}')]);
    for (let cut = 0; cut <= wire.length; cut++) {
      const r = new FrameReader();
      const got = [...r.push(wire.subarray(0, cut)), ...r.push(wire.subarray(cut))];
      assert.deepEqual(got.map((f) => [f.type, f.data.toString('hex')]), [[FRAME.stdout, Buffer.from('hello').toString('hex')], [FRAME.stderr, '000102'], [FRAME.exit, Buffer.from('{"code":3,"signal":null}').toString('hex')]]);
    }
  });

  it('split large data, and refuse a frame that is too large or of an unknown type', () => {
    const parts = dataFrames(FRAME.stdin, Buffer.alloc(MAX_FRAME * 2 + 1));
    assert.equal(parts.length, 3);
    const head = Buffer.alloc(5);
    head.writeUInt8(FRAME.stdout, 0);
    head.writeUInt32BE(MAX_FRAME + 1, 1);
    assert.throws(() => new FrameReader().push(head), /larger than/);
    assert.throws(() => new FrameReader().push(Buffer.from([42, 0, 0, 0, 0])), /unknown frame type 42/);
  });

  it('turn an exit into a shell\'s status', () => {
    const sig = (n: string) => ({ SIGINT: 2, SIGKILL: 9 })[n];
    assert.equal(exitStatus({ code: 7, signal: null }, sig), 7);
    assert.equal(exitStatus({ code: null, signal: 'INT' }, sig), 130);
    assert.equal(exitStatus({ code: null, signal: 'SIGKILL' }, sig), 137);
  });
});

describe('exec argv', () => {
  it('docker exec: the command after the container, never read as options', () => {
    assert.deepEqual(dockerExecArgs('gpurun-abc', ['--privileged', 'sh']), ['docker', 'exec', '-i', '-w', '/workspace', 'gpurun-abc', '--privileged', 'sh']);
    assert.deepEqual(dockerExecArgs('gpurun-abc', ['bash'], { term: 'xterm' }), ['docker', 'exec', '-i', '-t', '-e', 'TERM=xterm', '-w', '/workspace', 'gpurun-abc', 'bash']);
    assert.deepEqual(containerAddressArgs('gpurun-abc').slice(0, 3), ['docker', 'inspect', '--format']);
    assert.equal(parseContainerAddress('\n172.18.0.2\n'), '172.18.0.2');
    assert.equal(parseContainerAddress('\n\n'), null);
  });

  it('process hosts: the job\'s variables and folder, then the command as words', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpurun-exec-unit-'));
    try {
      spawnSync('sh', ['-c', 'mkdir -p "$1/env" && printf "a b\\n" >"$1/env/V" && printf 0 >"$1/env/CUDA_VISIBLE_DEVICES"', 'mk', dir]);
      const r = spawnSync(processExecArgs(dir, tmpdir(), ['sh', '-c', 'printf "%s|%s|%s|%s" "$V" "$CUDA_VISIBLE_DEVICES" "$PWD" "$1"', 'x', '$(touch pwned); `id`'])[0], processExecArgs(dir, tmpdir(), ['sh', '-c', 'printf "%s|%s|%s|%s" "$V" "$CUDA_VISIBLE_DEVICES" "$PWD" "$1"', 'x', '$(touch pwned); `id`']).slice(1), { encoding: 'utf8', cwd: dir });
      assert.equal(r.stdout, `a b\n|0|${tmpdir()}|$(touch pwned); \`id\``);
      assert.ok(!readdirSync(dir).includes('pwned'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('interactive jobs (run -it)', () => {
  it('the holder ends with the status the command run through exec leaves', () => {
    const tmp = mkdtempSync(join(tmpdir(), 'gpurun-hold-unit-'));
    try {
      const env = { ...process.env, TMPDIR: tmp, GPURUN_JOB_ID: `unit${process.pid}` };
      const hold = holdCommand(['python3']);
      const runArgv = holdRunCommand(`unit${process.pid}`, ['sh', '-c', 'echo "in $1"; exit 9', 'x', 'the job']);
      const both = spawnSync('sh', ['-c', 'h="$1"; shift; sh -c "$h" gpurun-interactive python3 & hp=$!; sleep 0.5; kill -0 "$hp" && echo waiting; "$@"; echo "ran $?"; wait "$hp"; echo "held $?"', 'both', hold[2], ...runArgv], { env, encoding: 'utf8', timeout: 20_000 });
      assert.equal(both.stdout, 'waiting\nin the job\nran 9\nheld 9\n');
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('reattach requests', () => {
  it('take a session id and an offset, nothing else', () => {
    const id = 'ab'.repeat(16);
    assert.deepEqual(parseAttachRequest(encodeExecRequest({ session: id, offset: 12 })), { session: id, offset: 12 });
    assert.throws(() => parseAttachRequest(undefined), /the reattach request is missing \(the x-gpurun-exec-attach header\)/);
    assert.throws(() => parseAttachRequest(Buffer.from(JSON.stringify({ session: '../etc', offset: 0 })).toString('base64url')), /32 hex digits/);
    assert.throws(() => parseAttachRequest(Buffer.from(JSON.stringify({ session: id, offset: -1 })).toString('base64url')), /offset must be a whole number/);
    assert.throws(() => parseAttachRequest(Buffer.from(JSON.stringify({ session: id, offset: 1, command: ['sh'] })).toString('base64url')), /unknown field "command"/);
  });
});

describe('exec sessions (broker side)', () => {
  /** A connection: what the broker writes is kept (`sent`), what the client sends is pushed in. */
  class Conn extends Duplex {
    sent: Buffer[] = [];
    constructor() {
      super({ read() {}, write: (c: Buffer, _e, cb) => (this.sent.push(c), cb()) });
    }
  }
  /** Frames a connection received since the last look: [type, text]. */
  function received(sock: Conn): Array<[number, string]> {
    return new FrameReader().push(Buffer.concat(sock.sent.splice(0))).map((f) => [f.type, f.data.toString('utf8')]);
  }
  const tick = () => new Promise((r) => setImmediate(r));
  const proc = () => {
    const got: string[] = [];
    return { got, p: { write: (d: Buffer) => void got.push(`in:${d}`), end: () => void got.push('eof'), resize: (r: number, c: number) => void got.push(`size:${r}x${c}`), close: () => void got.push('hangup'), exited: new Promise<never>(() => {}) } };
  };

  it('replay the output a client missed and take input from the new connection; a drop is no hang-up', async () => {
    const sessions = new ExecSessions(60_000);
    const s = sessions.create('alice', 'j1');
    const { got, p } = proc();
    s.started(p);
    const a = new Conn();
    s.attach(a, 0);
    s.output(FRAME.stdout, Buffer.from('one '));
    assert.deepEqual(received(a).map((f) => f[0]), [FRAME.session, FRAME.stdout]);
    a.destroy();
    await tick();
    s.output(FRAME.stdout, Buffer.from('two '));
    s.output(FRAME.stderr, Buffer.from('three'));
    assert.deepEqual(got, []);
    assert.equal(sessions.get(s.id, 'bob', 'j1'), undefined);
    assert.equal(sessions.get(s.id, 'alice', 'j2'), undefined);
    const b = new Conn();
    sessions.get(s.id, 'alice', 'j1')!.attach(b, 4);
    assert.deepEqual(received(b).slice(1), [[FRAME.stdout, 'two '], [FRAME.stderr, 'three']]);
    b.push(Buffer.concat([encodeFrame(FRAME.stdin, 'x'), encodeFrame(FRAME.resize, '{"rows":5,"cols":7}'), encodeFrame(FRAME.ping)]));
    await tick();
    assert.deepEqual(got, ['in:x', 'size:5x7']);
    assert.deepEqual(received(b), [[FRAME.pong, '{"input":1,"eof":false}']]);
    b.push(encodeFrame(FRAME.hangup));
    await tick();
    assert.deepEqual(got.at(-1), 'hangup');
    assert.equal(sessions.get(s.id, 'alice', 'j1'), undefined);
  });

  it('keep the last REPLAY_BYTES and say how much was lost; an ended session hands over its exit once', async () => {
    const sessions = new ExecSessions(60_000);
    const s = sessions.create('alice', 'j1');
    s.started(proc().p);
    for (let i = 0; i < 3; i++) s.output(FRAME.stdout, Buffer.alloc(REPLAY_BYTES / 2, 'a'));
    s.finish(encodeFrame(FRAME.exit, '{"code":0,"signal":null}'));
    const b = new Conn();
    s.attach(b, 0);
    await tick();
    const f = received(b);
    assert.match(f[1][1], new RegExp(`\\[gpurun: ${REPLAY_BYTES / 2} bytes of output were lost while disconnected\\]`));
    assert.equal(f.filter((x) => x[0] === FRAME.stdout).reduce((n, x) => n + x[1].length, 0), REPLAY_BYTES);
    assert.deepEqual(f.at(-1), [FRAME.exit, '{"code":0,"signal":null}']);
    assert.equal(sessions.get(s.id, 'alice', 'j1'), undefined);
  });
});

describe('local terminals', () => {
  it('write their device name where a later size can be set on it, and size it with stty -F', () => {
    const argv = localPtyArgv(30, 100, '/run/job/pty-1');
    assert.deepEqual([argv[0], argv[1], ...argv.slice(3)], ['sh', '-c', 'gpurun-pty', '30', '100', '/run/job/pty-1']);
    assert.match(argv[2], /tty >"\$3"/);
    assert.deepEqual(localResizeArgv('/dev/pts/7', 40, 120), ['stty', '-F', '/dev/pts/7', 'rows', '40', 'cols', '120']);
  });
});
