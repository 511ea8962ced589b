/**
 * Why a job's interpreter could not be run, when it is a virtualenv's: a venv's `bin/python` is a symbolic link to the
 * Python of the machine that made it (the developer's laptop, or another image), so in an image or on a host without
 * that Python the link points nowhere and the shell says only `not found` (exit 127) or Docker `stat …: no such file
 * or directory`. The runtimes gather the facts with INTERPRETER_PROBE where the workspace's files are (the host's
 * mount, or the local folder); this module reads them and says what to do. Pure.
 */

/**
 * A POSIX sh script: `sh -c PROBE probe ROOT SEEN CMD`. ROOT is where the workspace's files can be read by the probe;
 * SEEN the path the job sees the workspace at (/workspace in a container); CMD the job's first word. It follows CMD's
 * links while they stay relative (inside the workspace) and prints one `link TARGET` line per hop, `file` when the
 * chain ends at a file that exists there, and the `pyvenv.cfg` of the venv around CMD as `cfg LINE` lines. It prints
 * nothing for a bare command name (looked up on PATH) or an absolute path outside the workspace. Never fails.
 */
export const INTERPRETER_PROBE = [
  'root=$1 seen=$2 p=$3',
  'case "$p" in "$seen"/*) p=$root/${p#"$seen"/} ;; /*) exit 0 ;; */*) p=$root/$p ;; *) exit 0 ;; esac',
  'orig=$p n=0',
  'while [ -L "$p" ] && [ $n -lt 16 ]; do',
  '  t=$(readlink -- "$p") || break',
  '  printf "link %s\\n" "$t"',
  '  case "$t" in /*) p= ; break ;; esac',
  '  p=$(dirname -- "$p")/$t n=$((n+1))',
  'done',
  '[ -n "$p" ] && [ -f "$p" ] && echo file',
  'cfg=$(dirname -- "$(dirname -- "$orig")")/pyvenv.cfg',
  '[ -f "$cfg" ] && sed -n "1,20s/^/cfg /p" -- "$cfg"',
  'exit 0',
].join('\n');

/** argv that runs INTERPRETER_PROBE. */
export function interpreterProbeArgs(root: string, seen: string, command0: string): string[] {
  return ['sh', '-c', INTERPRETER_PROBE, 'gpurun-probe', root, seen, command0];
}

export interface InterpreterFacts {
  /** The job's first word, as given. */
  command: string;
  /** The link targets from the command on, in order. */
  links: string[];
  /** The chain ended at a file in the workspace (then the interpreter exists: the cause is something else). */
  file: boolean;
  /** `home` and `version` of the venv's pyvenv.cfg, when there is one. */
  venv?: { home?: string; version?: string };
}

/** Parses the probe's output. */
export function parseInterpreterProbe(command: string, out: string): InterpreterFacts {
  const facts: InterpreterFacts = { command, links: [], file: false };
  const cfg: Record<string, string> = {};
  let sawCfg = false;
  for (const line of out.split('\n')) {
    if (line.startsWith('link ')) facts.links.push(line.slice(5));
    else if (line === 'file') facts.file = true;
    else if (line.startsWith('cfg ')) {
      sawCfg = true;
      const m = /^\s*([\w-]+)\s*=\s*(.*?)\s*$/.exec(line.slice(4));
      if (m) cfg[m[1].toLowerCase()] = m[2];
    }
  }
  if (sawCfg) facts.venv = { ...(cfg.home ? { home: cfg.home } : {}), ...(cfg.version || cfg.version_info ? { version: cfg.version || cfg.version_info } : {}) };
  return facts;
}

/** What lacks the Python: a container image, or a host (the job runs on it as a plain process). */
export type InterpreterPlace = { kind: 'image'; name?: string } | { kind: 'host'; name: string };

/**
 * The message for a job whose interpreter cannot be run, or null when the facts do not show a dangling venv link
 * (a bare name, a real file, no venv): the runtime's own words stay then.
 */
export function missingInterpreterMessage(f: InterpreterFacts, place: InterpreterPlace): string | null {
  const target = f.links.at(-1);
  const dangling = !f.file && target !== undefined && target.startsWith('/');
  if (!dangling && !(f.venv && !f.file)) return null;
  const where = place.kind === 'image' ? (place.name ? `the image ${place.name}` : 'the image') : place.name === 'local' ? 'this machine' : `host ${place.name}`;
  const venvDir = f.command.replace(/\/bin\/[^/]+$/, '');
  const python = f.venv?.version ? `Python ${f.venv.version}` : 'that Python';
  const at = f.venv?.home ? ` at ${f.venv.home}` : '';
  const what = dangling
    ? `the job's interpreter ${f.command} is a link to ${target}, which ${where} does not have`
    : `the job's interpreter ${f.command} (a virtualenv) cannot be run on ${where}`;
  const why = `A virtualenv's python is a link to the Python of the machine that made it${f.venv ? ` (pyvenv.cfg of ${venvDir}: ${python}${at})` : ''}, not a copy.`;
  const own = place.kind === 'image' ? "the image's" : `${where}'s`;
  const fix = place.kind === 'image' ? `Use an image that has ${python}${at} (--image)` : `Install ${python}${at} on ${where}`;
  return `${what}. ${why} ${fix}, or make the virtualenv with ${own} own Python (e.g. gpurun run -- python3 -m venv --copies .venv-gpu, then run .venv-gpu/bin/python), ` +
    `or set the interpreter to ${own} (python3 …, or the gpurun.pythonCommand setting in VS Code).`;
}
