/**
 * `gpurun sftp-serve --root DIR [--read-only]`: SFTP on stdin/stdout, confined to DIR. The GPU host's sshfs runs it
 * on the developer's machine for the `direct` mount transport (sshfs -o sftp_server=…).
 */
import { resolve } from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { GpurunError } from '../protocol/errors.ts';
import { parseArgs } from './args.ts';
import { serveSftp } from '../hosts/sftpGuard.ts';
import { snapshotServe } from './snapshotServe.ts';

export async function sftpServeCommand(argv: string[]): Promise<number> {
  const { opts } = parseArgs(argv, { values: ['root', 'snapshot'], flags: ['read-only', 'help'], short: { h: 'help' } }, 'sftp-serve');
  if (opts.help) {
    process.stdout.write(
      'Usage: gpurun sftp-serve --root DIR [--read-only]\n       gpurun sftp-serve --root DIR --snapshot list|stat|tar|watch\n\n' +
        'Serves SFTP on stdin/stdout, refusing every path outside DIR (for sshfs on a GPU host).\n' +
        'With --snapshot: lists, streams (tar) or watches the files under DIR for a GPU host\'s snapshot mount.\n',
    );
    return 0;
  }
  if (typeof opts.root !== 'string') throw new GpurunError('E_BAD_REQUEST', 'sftp-serve needs --root DIR', { hint: 'gpurun sftp-serve --root /path/to/workspace' });
  const root = resolve(opts.root);
  if (!existsSync(root) || !statSync(root).isDirectory()) throw new GpurunError('E_NOT_FOUND', `no folder ${root}`, { hint: 'The workspace must exist on this machine.' });
  if (opts.snapshot !== undefined) {
    if (opts['read-only']) throw new GpurunError('E_BAD_REQUEST', '--snapshot and --read-only do not go together', { hint: 'A read-only host mounts plain sshfs.' });
    return snapshotServe(root, String(opts.snapshot));
  }
  const session = serveSftp(root, process.stdin, process.stdout, { readOnly: !!opts['read-only'], onDenied: (why) => process.stderr.write(`gpurun sftp-serve: refused: ${why}\n`) });
  await session.done;
  return 0;
}
