/**
 * Workspace staging: the developer's workspace copied into the cluster's shared storage before a job, incrementally,
 * and the files a job wrote brought back after it. A manifest kept by the broker (one JSON file per staged workspace)
 * records, for each staged file, the size and mtime of the developer's copy and the mtime given to the cluster's copy:
 * - stage: a file is copied when its size or mtime differs from the manifest (a second submit after one edit copies
 *   one file); files deleted from the workspace are deleted from the staged copy; `.git` and `.gpurun-ignore`
 *   patterns are left out; symbolic links are not followed.
 * - bring back: a staged file that is new or whose size or mtime (to the second, what SFTP keeps) differs from the
 *   manifest was written by the job and is copied back, unless the developer's copy changed since it was staged:
 *   a newer edit is never overwritten (it is reported instead).
 */
import { readFile, readdir, stat, writeFile, mkdir, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { compileIgnore, type IgnoreRules } from './ignore.ts';
import type { ClusterFiles } from './files.ts';

/** rel → [size, mtimeMs] of the developer's copy when staged, and the staged copy's mtime in whole seconds. */
type Manifest = Record<string, [number, number, number]>;

export interface StageReport {
  copied: number;
  unchanged: number;
  removed: number;
  bytes: number;
  ms: number;
  /** `.gpurun-ignore` lines that were not understood. */
  ignoreErrors: string[];
}

export interface BringBackReport {
  copied: number;
  /** Files the job changed that were not copied back because the developer changed them since staging. */
  keptNewer: string[];
}

const PARALLEL = 16;

async function readManifest(path: string): Promise<Manifest> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Manifest;
  } catch {
    return {};
  }
}

async function writeManifest(path: string, m: Manifest): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(m));
  await rename(tmp, path);
}

async function loadIgnore(workspace: string): Promise<IgnoreRules> {
  const text = await readFile(join(workspace, '.gpurun-ignore'), 'utf8').catch(() => '');
  return compileIgnore(text);
}

/** Every regular file of the workspace that is not ignored: rel → [size, mtimeMs]. */
export async function walkWorkspace(root: string, rules: IgnoreRules): Promise<Map<string, [number, number]>> {
  const out = new Map<string, [number, number]>();
  const walk = async (abs: string, rel: string): Promise<void> => {
    const ents = await readdir(abs, { withFileTypes: true });
    await Promise.all(
      ents.map(async (e) => {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) {
          if (!rules.ignores(r, true)) await walk(join(abs, e.name), r);
        } else if (e.isFile() && !rules.ignores(r, false)) {
          const s = await stat(join(abs, e.name)).catch(() => undefined);
          if (s) out.set(r, [s.size, s.mtimeMs]);
        }
      }),
    );
  };
  await walk(root, '');
  return out;
}

async function inParallel<T>(items: T[], fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(PARALLEL, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

const locks = new Map<string, Promise<unknown>>();
/** One stage or bring-back at a time per manifest (two jobs of one workspace share its staged copy). */
function serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = locks.get(key) ?? Promise.resolve();
  const run = prev.then(fn, fn);
  const settled = run.catch(() => {});
  locks.set(key, settled);
  void settled.then(() => locks.get(key) === settled && locks.delete(key));
  return run;
}

export function stageWorkspace(files: ClusterFiles, workspace: string, staged: string, manifestPath: string): Promise<StageReport> {
  return serial(manifestPath, async () => {
    const t0 = performance.now();
    const rules = await loadIgnore(workspace);
    const [local, manifest] = await Promise.all([walkWorkspace(workspace, rules), readManifest(manifestPath)]);
    await files.mkdirp(staged);
    const todo: string[] = [];
    let unchanged = 0;
    let bytes = 0;
    for (const [rel, [size, mtime]] of local) {
      const m = manifest[rel];
      if (m && m[0] === size && m[1] === mtime) unchanged++;
      else {
        todo.push(rel);
        bytes += size;
      }
    }
    const gone = Object.keys(manifest).filter((rel) => !local.has(rel));
    await inParallel(todo, async (rel) => {
      const [size, mtime] = local.get(rel)!;
      await files.put(join(workspace, rel), join(staged, rel), mtime);
      manifest[rel] = [size, mtime, Math.floor(mtime / 1000)];
    });
    await inParallel(gone, async (rel) => {
      await files.remove(join(staged, rel));
      delete manifest[rel];
    });
    if (todo.length || gone.length) await writeManifest(manifestPath, manifest);
    return { copied: todo.length, unchanged, removed: gone.length, bytes, ms: Math.round(performance.now() - t0), ignoreErrors: rules.errors };
  });
}

export function bringBack(files: ClusterFiles, workspace: string, staged: string, manifestPath: string): Promise<BringBackReport> {
  return serial(manifestPath, async () => {
    const manifest = await readManifest(manifestPath);
    const remote = await files.list(staged, new Set(['.git']));
    const changed = remote.filter((e) => {
      const m = manifest[e.rel];
      return !m || m[0] !== e.size || m[2] !== Math.floor(e.mtimeMs / 1000);
    });
    const keptNewer: string[] = [];
    let copied = 0;
    await inParallel(changed, async (e) => {
      const localPath = join(workspace, e.rel);
      const m = manifest[e.rel];
      const mine = await stat(localPath).catch(() => undefined);
      // The developer's copy changed since it was staged (or appeared, for a file the job created): theirs wins.
      if (mine && (!m || mine.size !== m[0] || mine.mtimeMs !== m[1])) {
        keptNewer.push(e.rel);
        return;
      }
      await files.get(join(staged, e.rel), localPath, e.mtimeMs);
      const now = await stat(localPath);
      manifest[e.rel] = [now.size, now.mtimeMs, Math.floor(e.mtimeMs / 1000)];
      copied++;
    });
    if (copied) await writeManifest(manifestPath, manifest);
    return { copied, keptNewer: keptNewer.sort() };
  });
}
