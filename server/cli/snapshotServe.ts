/**
 * `gpurun sftp-serve --root DIR --snapshot list|stat|tar|watch`: the developer's side of a snapshot mount whose host
 * reaches the files over SSH (hosts/workspaceSide.ts DevSide), confined to DIR like the SFTP side:
 * - list: every entry under DIR (hosts/snapshotPlan.ts treeRecords);
 * - stat: the entries of the relative paths read NUL-separated on stdin (gone ones left out);
 * - tar: a POSIX tar stream of the relative paths read NUL-separated on stdin. A path that is not a plain relative
 *   one, or that leads through a symlink (a folder of it is a link), is refused and nothing is written;
 * - watch: the relative path of each changed entry, NUL-terminated, until stdin closes; an empty record once the
 *   watch is in place.
 * It never writes under DIR.
 */
import { spawn } from 'node:child_process';
import { GpurunError } from '../protocol/errors.ts';
import { treeRecords } from '../hosts/snapshotPlan.ts';
import { LocalSide, refusedPath, tarCreateArgs, walkTree } from '../hosts/workspaceSide.ts';

export const SNAPSHOT_MODES = ['list', 'stat', 'tar', 'watch'] as const;

export async function snapshotServe(root: string, mode: string): Promise<number> {
  const side = new LocalSide(root);
  if (mode === 'list') return write(treeRecords(walkTree(root)));
  if (mode === 'stat') return write(treeRecords(await side.entries(namesOf(await readStdin()).filter((n) => refusedPath(root, n) === null))));
  if (mode === 'tar') return tar(root, namesOf(await readStdin()));
  if (mode === 'watch') return watch(root, side);
  throw new GpurunError('E_BAD_REQUEST', `unknown --snapshot mode "${mode}"`, { hint: `one of: ${SNAPSHOT_MODES.join(', ')}` });
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function namesOf(text: string): string[] {
  return text.split('\0').filter(Boolean);
}

function write(text: string): Promise<number> {
  return new Promise((resolve) => process.stdout.write(text, () => resolve(0)));
}

async function tar(root: string, names: string[]): Promise<number> {
  for (const n of names) {
    const why = refusedPath(root, n);
    // A path removed since it was listed is only left out; one that leads out is refused outright.
    if (why && !why.endsWith('is gone')) throw new GpurunError('E_FORBIDDEN', `refused: ${why}`);
  }
  const ok = names.filter((n) => refusedPath(root, n) === null);
  const t = spawn('tar', [...tarCreateArgs(root), '--ignore-failed-read'], { stdio: ['pipe', 'inherit', 'inherit'] });
  t.stdin.end(Buffer.from(ok.map((p) => `${p}\0`).join(''), 'utf8'));
  return new Promise((resolve, reject) => {
    t.on('error', reject);
    t.on('close', (code) => resolve(code ?? 1));
  });
}

function watch(root: string, side: LocalSide): Promise<number> {
  const folders = [...walkTree(root)].filter(([, e]) => e.type === 'd').map(([p]) => p);
  const w = side.watch(folders, (rel) => process.stdout.write(`${rel}\0`), (e) => process.stderr.write(`gpurun sftp-serve: ${e.message}\n`));
  process.stdout.write('\0');
  return new Promise((resolve) => {
    const end = () => {
      w.close();
      resolve(0);
    };
    process.stdin.on('end', end).on('close', end).resume();
    process.stdout.on('error', end);
  });
}
