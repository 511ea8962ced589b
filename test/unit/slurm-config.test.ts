/** The `clusters` section's login setting: "local", or an SSH login node validated like an SSH host. */
import assert from 'node:assert/strict';
import { homedir } from 'node:os';
import { validateConfig } from '../../server/config.ts';
import { GpurunError } from '../../server/protocol/errors.ts';

const v = (login: unknown, extra: Record<string, unknown> = {}) =>
  validateConfig({ clusters: [{ name: 'hpc', login, stagingDir: '/shared/gpurun', ...extra }] }, 'broker.json', '/etc/gpurun', '/home/u/.local/share/gpurun');

describe('slurm cluster config: login', () => {
  it('keeps "local"', () => {
    assert.equal(v('local').clusters[0].login, 'local');
  });

  it('reads an SSH login node with the SSH hosts\' fields; relative paths resolve against the config folder', () => {
    const c = v({ address: 'login.hpc.example', port: 2200, user: 'gpurun', identityFile: 'keys/broker', knownHosts: '/etc/gpurun/known_hosts' });
    assert.deepEqual(c.clusters[0].login, { address: 'login.hpc.example', port: 2200, user: 'gpurun', identityFile: '/etc/gpurun/keys/broker', agent: false, knownHosts: '/etc/gpurun/known_hosts' });
  });

  it('defaults to port 22, ssh-agent without identityFile, and ~/.ssh/known_hosts', () => {
    const login = v({ address: 'login.hpc.example', user: 'gpurun' }).clusters[0].login;
    assert.deepEqual(login, { address: 'login.hpc.example', port: 22, user: 'gpurun', agent: true, knownHosts: `${homedir()}/.ssh/known_hosts` });
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['an unknown word', 'login.hpc.example', /clusters\[0\]\.login: "login\.hpc\.example" is neither of these: "local" \(the broker runs on the login node\) or an SSH login node \{"address": HOST/],
    ['a number', 7, /clusters\[0\]\.login: 7 is neither of these: "local"/],
    ['nothing', undefined, /clusters\[0\]\.login: is required: "local" \(the broker runs on the login node\) or an SSH login node/],
    ['no address', { user: 'gpurun' }, /clusters\[0\]\.login\.address: is required for an SSH login node \(or give sshAlias\)/],
    ['a port out of range', { address: 'h', port: 70000 }, /clusters\[0\]\.login\.port: must be at most 65535/],
    ['a port that is not a number', { address: 'h', port: '22' }, /clusters\[0\]\.login\.port: must be a whole number ≥ 1/],
    ['neither key nor agent', { address: 'h', agent: false }, /clusters\[0\]\.login\.identityFile: give a key file, or set agent: true/],
    ['an empty user', { address: 'h', user: '' }, /clusters\[0\]\.login\.user: must be a non-empty string/],
    ['an empty knownHosts', { address: 'h', knownHosts: '' }, /clusters\[0\]\.login\.knownHosts: must be a non-empty string/],
    ['a host-only setting', { address: 'h', runtime: 'docker' }, /clusters\[0\]\.login\.runtime: unknown setting; known here: address, port, user, sshAlias, identityFile, agent, knownHosts/],
  ];
  for (const [what, login, re] of bad) {
    it(`refuses ${what}, naming the field`, () => {
      assert.throws(
        () => v(login),
        (e: unknown) => e instanceof GpurunError && e.code === 'E_CONFIG' && re.test(e.message) && /Fix the field/.test(e.hint ?? ''),
      );
    });
  }
});
