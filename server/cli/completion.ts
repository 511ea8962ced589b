/**
 * `gpurun completion bash|zsh|fish`: a completion script for subcommands, their options, and the values of a few
 * (states, queues, shells). The scripts are text built from one table; `run`'s options are the job options schema's.
 * Pure apart from printing.
 */
import { JOB_STATES, QUEUES } from '../protocol/jobs.ts';
import { usage } from './args.ts';
import { RUN_OPTIONS } from './run.ts';

/** Subcommands and their options (without the leading --). */
export const COMPLETION: Record<string, string[]> = {
  run: [...RUN_OPTIONS.values, ...RUN_OPTIONS.flags],
  ls: ['all', 'state', 'since', 'name', 'json', 'broker', 'help'],
  logs: ['follow', 'tail', 'from', 'broker', 'help'],
  wait: ['notify', 'quiet', 'broker', 'help'],
  show: ['json', 'broker', 'help'],
  cancel: ['broker', 'help'],
  exec: ['stdin', 'tty', 'broker', 'help'],
  forward: ['broker', 'help'],
  shell: RUN_OPTIONS.values.concat('help'),
  hosts: ['json', 'broker', 'help'],
  cache: ['host', 'json', 'broker', 'help'],
  migrate: ['to', 'no-wait', 'broker', 'help'],
  drain: ['json', 'broker', 'help'],
  undrain: ['json', 'broker', 'help'],
  broker: ['config', 'help'],
  token: ['admin', 'config', 'help'],
  'serve-workspace': ['help'],
  'sftp-serve': ['root', 'read-only', 'snapshot', 'help'],
  completion: ['help'],
  help: [],
};

/** Values offered after an option. */
export const VALUES: Record<string, string[]> = {
  queue: [...QUEUES],
  state: [...JOB_STATES, 'active', 'ended'],
};

export function bashCompletion(): string {
  const cases = Object.entries(COMPLETION).map(([c, o]) => `    ${c}) opts="${o.map((x) => `--${x}`).join(' ')}" ;;`).join('\n');
  return `# gpurun completion for bash: eval "$(gpurun completion bash)" (e.g. in ~/.bashrc)
_gpurun() {
  local cur prev cmd opts
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  cmd="\${COMP_WORDS[1]}"
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=( $(compgen -W "${Object.keys(COMPLETION).join(' ')}" -- "$cur") )
    return
  fi
  local w; for w in "\${COMP_WORDS[@]:1:COMP_CWORD-1}"; do [ "$w" = "--" ] && { COMPREPLY=( $(compgen -f -- "$cur") ); return; }; done
  case "$prev" in
${Object.entries(VALUES).map(([o, v]) => `    --${o}) COMPREPLY=( $(compgen -W "${v.join(' ')}" -- "$cur") ); return ;;`).join('\n')}
    --workspace|--env-file) COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
    --config) [ "$cmd" = run ] && return; COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
  esac
  [ "$cmd" = completion ] && { COMPREPLY=( $(compgen -W "bash zsh fish" -- "$cur") ); return; }
  case "$cmd" in
${cases}
    *) opts="" ;;
  esac
  COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
}
complete -o default -F _gpurun gpurun
`;
}

export function zshCompletion(): string {
  // zsh runs bash completion functions through bashcompinit.
  return `# gpurun completion for zsh: eval "$(gpurun completion zsh)" (e.g. in ~/.zshrc)
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
${bashCompletion().split('\n').slice(1).join('\n')}`;
}

export function fishCompletion(): string {
  const lines = ['# gpurun completion for fish: gpurun completion fish | source (or save it as ~/.config/fish/completions/gpurun.fish)', 'complete -c gpurun -f'];
  lines.push(`complete -c gpurun -n __fish_use_subcommand -a "${Object.keys(COMPLETION).join(' ')}"`);
  for (const [c, opts] of Object.entries(COMPLETION)) {
    for (const o of opts) {
      const vals = VALUES[o];
      lines.push(`complete -c gpurun -n "__fish_seen_subcommand_from ${c}" -l ${o}${vals ? ` -x -a "${vals.join(' ')}"` : ['workspace', 'env-file', 'config'].includes(o) ? ' -r -F' : ''}`);
    }
  }
  lines.push('complete -c gpurun -n "__fish_seen_subcommand_from completion" -a "bash zsh fish"');
  return lines.join('\n') + '\n';
}

export async function completionCommand(argv: string[]): Promise<number> {
  const shell = argv[0];
  if (!shell || shell === '--help' || shell === '-h') {
    process.stdout.write('Usage: gpurun completion bash|zsh|fish\n\nPrints a completion script for the shell. Load it with:\n  bash: eval "$(gpurun completion bash)"   (in ~/.bashrc)\n  zsh:  eval "$(gpurun completion zsh)"    (in ~/.zshrc)\n  fish: gpurun completion fish > ~/.config/fish/completions/gpurun.fish\n');
    return shell ? 0 : 2;
  }
  const make = { bash: bashCompletion, zsh: zshCompletion, fish: fishCompletion }[shell];
  if (!make || argv.length > 1) throw usage('completion', `expected one shell: bash, zsh or fish; got "${argv.join(' ')}"`);
  process.stdout.write(make());
  return 0;
}
