/**
 * What the workspace suites share: the GPUs their test hosts report, a tree that has what sshfs and the snapshot
 * mount get wrong when they do (symlinks in and out, an empty file, a 50 MB file, names with spaces and unicode),
 * and the Python that lists a tree as a job sees it.
 */
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const A100 = { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 };
export const H100 = { name: 'NVIDIA H100', memoryMiB: 81559 };
export const L4 = { name: 'NVIDIA L4', memoryMiB: 23034 };
export const T4 = { name: 'Tesla T4', memoryMiB: 15360 };
export const V100 = { name: 'Tesla V100-SXM2-32GB', memoryMiB: 32768 };

/** Every file's SHA-256, every link's text and every folder, as Python sees the tree from the working directory. */
export const TREE_PY = [
  'import os, hashlib',
  'out = []',
  'for d, dirs, files in os.walk(".", followlinks=False):',
  '    dirs.sort()',
  '    for n in sorted(dirs + files):',
  '        p = os.path.join(d, n)',
  '        if os.path.islink(p): out.append(f"L {p} -> {os.readlink(p)}")',
  '        elif os.path.isdir(p): out.append(f"D {p}")',
  '        else: out.append(f"F {p} {hashlib.sha256(open(p, \'rb\').read()).hexdigest()}")',
  'print("\\n".join(out))',
].join('\n');

/** The tree under ws/tree (made once: a later call finds it there). */
export function makeTree(ws: string): void {
  if (existsSync(join(ws, 'tree'))) return;
  mkdirSync(join(ws, 'tree', 'sub dir', 'ünïcødé'), { recursive: true });
  writeFileSync(join(ws, 'tree', 'empty'), '');
  writeFileSync(join(ws, 'tree', 'sub dir', 'a file.txt'), 'with spaces\n');
  writeFileSync(join(ws, 'tree', 'sub dir', 'ünïcødé', 'naïve.py'), 'X = "ü"\n');
  const big = Buffer.alloc(50 << 20);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i);
  writeFileSync(join(ws, 'tree', 'big.bin'), big);
  symlinkSync('sub dir/a file.txt', join(ws, 'tree', 'link'));
  symlinkSync('/usr/bin/python3', join(ws, 'tree', 'abs-link'));
}
