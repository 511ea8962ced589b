/** `gpurun cache [--host H] [--json]` and `gpurun cache clear [--host H]`: your persistent cache on each host. */
import { cacheSizeText, cacheWhereText, type UserCacheInfo } from '../protocol/cache.ts';
import { formatBytes } from '../core/limits.ts';
import { parseArgs, usage } from './args.ts';
import { connect } from './connect.ts';

const HELP = `Usage: gpurun cache [--host HOST] [--json]
       gpurun cache clear [--host HOST]

Your persistent cache on each host: what your jobs download there (Hugging Face models and datasets, pip wheels,
torch hub) stays for your next job on that host. In a job, XDG_CACHE_HOME points at it, and HF_HOME, PIP_CACHE_DIR
and TORCH_HOME under it (unless the job sets them). No other user's job gets it (on a team broker's local host,
where every job runs as the broker's Unix user, it is a folder of its own, not a boundary).
  clear        empties it (on every host, or only on --host); refused while a job of yours runs there
  --host HOST  only this host
  --json       machine-readable output (GET /v1/cache)
`;

/** The table of `gpurun cache`: one line per host. Pure. */
export function cacheTable(caches: readonly UserCacheInfo[]): string {
  const rows = caches.map((c) => [c.host, cacheSizeText(c), cacheWhereText(c)]);
  const all = [['HOST', 'SIZE', 'CACHE'], ...rows];
  const w = [0, 1].map((i) => Math.max(...all.map((r) => r[i].length)));
  return all.map((r) => `${r[0].padEnd(w[0])}  ${r[1].padEnd(w[1])}  ${r[2]}`.trimEnd()).join('\n') + '\n';
}

export async function cacheCommand(argv: string[]): Promise<number> {
  const { opts, rest } = parseArgs(argv, { values: ['broker', 'host'], flags: ['json', 'help'], short: { h: 'help' } }, 'cache');
  if (opts.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (rest.length > 1 || (rest.length === 1 && rest[0] !== 'clear')) throw usage('cache', `expected: gpurun cache [--host HOST] or gpurun cache clear [--host HOST], got "${rest.join(' ')}"`);
  const host = opts.host as string | undefined;
  const conn = await connect(opts.broker as string | undefined);
  try {
    if (rest[0] === 'clear') {
      const cleared = await conn.client.clearCache(host);
      if (opts.json) process.stdout.write(`${JSON.stringify(cleared, null, 2)}\n`);
      else if (!cleared.length) process.stdout.write('no cache to clear\n');
      else for (const c of cleared) process.stdout.write(`cleared your cache on ${c.host}${c.bytes === null ? '' : ` (${formatBytes(c.bytes)})`}\n`);
      return 0;
    }
    const caches = await conn.client.caches(host);
    process.stdout.write(opts.json ? `${JSON.stringify(caches, null, 2)}\n` : cacheTable(caches));
    return 0;
  } finally {
    await conn.client.close();
  }
}
