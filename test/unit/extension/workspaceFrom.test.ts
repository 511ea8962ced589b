import assert from 'node:assert/strict';
import { resolveWorkspaceFrom, serveWorkspaceSpawn, servingHost } from '../../../extension/core/workspaceFrom.ts';

describe('extension: who serves the workspace (gpurun.workspaceFrom)', () => {
  it('auto: the client with a broker on another machine, the broker when it runs on this one', () => {
    assert.equal(resolveWorkspaceFrom('auto', 'http://gpu-broker:8750'), 'client');
    assert.equal(resolveWorkspaceFrom('auto', 'https://10.0.0.5:8750/'), 'client');
    assert.equal(resolveWorkspaceFrom(undefined, 'http://gpu-broker:8750'), 'client');
    assert.equal(resolveWorkspaceFrom('auto', 'not a url'), 'client');
    assert.equal(resolveWorkspaceFrom('auto', ''), 'broker');
    assert.equal(resolveWorkspaceFrom('auto', '   '), 'broker');
    assert.equal(resolveWorkspaceFrom('nonsense', ''), 'broker');
    assert.equal(resolveWorkspaceFrom('auto', 'http://127.0.0.1:8750'), 'broker');
    assert.equal(resolveWorkspaceFrom('auto', 'http://127.3.4.5:41234'), 'broker');
    assert.equal(resolveWorkspaceFrom('auto', 'http://localhost:8750'), 'broker');
    assert.equal(resolveWorkspaceFrom('auto', 'http://[::1]:8750'), 'broker');
  });

  it('broker and client are taken as they are, whatever the broker', () => {
    assert.equal(resolveWorkspaceFrom('broker', 'http://gpu-broker:8750'), 'broker');
    assert.equal(resolveWorkspaceFrom('client', ''), 'client');
  });

  it('the serve-workspace child gets the broker and token in its environment, never on its argv', () => {
    const token = 'gpr_secret_token_value';
    const { args, env } = serveWorkspaceSpawn('/ext/dist/cli.js', 'abc123', '/home/me/proj', { address: 'http://b:8750', token }, { PATH: '/bin', GPURUN_TOKEN: 'stale' });
    assert.deepEqual(args, ['/ext/dist/cli.js', 'serve-workspace', 'abc123', '--workspace', '/home/me/proj']);
    assert.ok(!args.some((a) => a.includes(token) || a.includes('b:8750')));
    assert.equal(env.GPURUN_BROKER, 'http://b:8750');
    assert.equal(env.GPURUN_TOKEN, token);
    assert.equal(env.PATH, '/bin');
  });

  it('without a token, a GPURUN_TOKEN inherited from VS Code is not passed on', () => {
    const { env } = serveWorkspaceSpawn('cli.js', 'j1', '/w', { address: 'http://b:8750' }, { GPURUN_TOKEN: 'someone-elses' });
    assert.equal('GPURUN_TOKEN' in env, false);
  });

  it('reads the host from the CLI\'s serving line', () => {
    assert.deepEqual(servingHost('gpurun: serving /home/me/my proj to host gpu1\n'), { host: 'gpu1', readOnly: false });
    assert.deepEqual(servingHost('gpurun: serving /w to host node-7 (read-only)'), { host: 'node-7', readOnly: true });
    assert.equal(servingHost('gpurun: refused an SFTP request from the host: ../etc'), undefined);
    assert.equal(servingHost('gpurun: job j1 succeeded; stopped serving /w'), undefined);
  });
});
