/**
 * Which folders of the broker machine a user may name as a job's workspace (the one place that decides it). Pure:
 * the file system is reached only through the `realpath` the caller passes in.
 *
 * On a team broker a workspace the broker reads itself (`workspaceFrom: "broker"`) is given to the job read-write
 * with the broker's rights, so it must be a folder the submitting user may see: inside one of that user's
 * configured roots (`workspaceRoots`), after symlinks and `..` are resolved. Some folders are never a workspace,
 * whatever the roots say: `/`, and any folder that is, is inside, or contains the broker's data folder, its config
 * file's folder, or a folder holding its SSH keys or known_hosts files. Workspaces served by the client
 * (`workspaceFrom: "client"`) are not read by the broker and are not checked here.
 */
import { GpurunError } from '../protocol/errors.ts';

export interface WorkspacePolicy {
  /**
   * Per-user roots as configured: `"*"` applies to every user, a user's own entry adds to it. `{user}` in a root is
   * replaced by the user's name. `null`: the broker reads no workspace at all (only client-served ones work).
   */
  roots: Record<string, string[]> | null;
  /** Folders no workspace may be, be inside or contain (absolute). */
  protectedDirs: string[];
}

/** Resolves symlinks and `..` of an absolute path; throws (ENOENT, ENOTDIR, EACCES, …) when it cannot. */
export type RealPath = (path: string) => string;

const NO_ROOTS_HINT =
  'Serve the workspace from your own machine instead: gpurun run --serve-workspace (in VS Code: gpurun.workspaceFrom "client"); or ask the broker admin to configure workspaceRoots.';

function refuse(message: string, hint: string): never {
  throw new GpurunError('E_FORBIDDEN', message, { hint });
}

/** `a` is `b` or inside it (both normalised absolute paths). */
export function isWithin(a: string, b: string): boolean {
  return b === '/' || a === b || a.startsWith(`${b}/`);
}

/** An absolute path without `.`/`..` segments, repeated or trailing slashes. Undefined for anything else. */
export function normalAbsolute(path: string): string | undefined {
  if (!path.startsWith('/') || path.includes('\0')) return undefined;
  const parts: string[] = [];
  for (const seg of path.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') parts.pop();
    else parts.push(seg);
  }
  return `/${parts.join('/')}`;
}

/** The roots that apply to `user`, with `{user}` filled in. */
export function rootsOf(policy: WorkspacePolicy, user: string): string[] {
  // A name that is not one path segment (".", "..", "a/b", NUL) gets no roots: it could climb out of {user}.
  if (!policy.roots || user === '.' || user === '..' || /[/\0]/.test(user) || user === '') return [];
  const raw = [...(policy.roots['*'] ?? []), ...(policy.roots[user] ?? [])];
  return raw.map((r) => r.split('{user}').join(user));
}

/**
 * The real path of the workspace `asked` if `user` may name it; else an E_FORBIDDEN (or E_BAD_REQUEST for a path
 * that is not an absolute, existing folder) that says why and what to do. Nothing is changed either way.
 */
export function authorizeWorkspace(user: string, asked: string, policy: WorkspacePolicy, realpath: RealPath): string {
  if (policy.roots === null) {
    refuse('this broker does not read workspaces from its own disk (its config has no workspaceRoots)', NO_ROOTS_HINT);
  }
  const norm = normalAbsolute(asked);
  if (norm === undefined) throw new GpurunError('E_BAD_REQUEST', 'workspace: must be an absolute path without NUL bytes');
  let real: string;
  try {
    real = realpath(norm);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new GpurunError('E_BAD_REQUEST', `workspace: ${asked} ${code === 'ENOENT' || code === 'ENOTDIR' ? 'does not exist' : `cannot be read (${code ?? 'error'})`} on the broker machine`, { hint: NO_ROOTS_HINT });
  }
  const realOf = (p: string): string | undefined => {
    const n = normalAbsolute(p);
    if (n === undefined) return undefined;
    try {
      return realpath(n);
    } catch {
      return n; // not there (yet): compare by name
    }
  };
  if (real === '/') refuse(`workspace: ${asked} is the root folder of the broker machine; a job may never see all of it`, 'Name a project folder.');
  for (const p of policy.protectedDirs) {
    const rp = realOf(p);
    if (rp && (isWithin(real, rp) || isWithin(rp, real))) {
      refuse(`workspace: ${asked} is or contains a folder of the broker itself (its data, config or SSH keys); a job may never see it`, 'Name a project folder of your own.');
    }
  }
  const roots = rootsOf(policy, user).map(realOf).filter((r): r is string => r !== undefined);
  if (!roots.some((r) => isWithin(real, r))) {
    refuse(`workspace: ${asked} is outside the folders ${user} may use on this broker${roots.length ? ` (${roots.join(', ')})` : ' (none are configured for this user)'}`, `Name a folder inside your workspace roots, or ${NO_ROOTS_HINT.charAt(0).toLowerCase()}${NO_ROOTS_HINT.slice(1)}`);
  }
  return real;
}
