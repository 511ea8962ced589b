/**
 * `npm run bench`: runs every bench/*.ts module's `run()` in turn (or only those named: npm run bench -- core).
 * Each prints its figures and its ratio to a baseline measured in the same run. Not tests: nothing here fails on
 * a slow machine; the figures go into the issue notes.
 */
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dir = fileURLToPath(new URL('.', import.meta.url));
const only = process.argv.slice(2);
const modules = readdirSync(dir)
  .filter((f) => f.endsWith('.ts') && f !== 'run.ts' && !f.startsWith('_'))
  .filter((f) => only.length === 0 || only.includes(f.replace(/\.ts$/, '')))
  .sort();
for (const f of modules) {
  console.log(`\n## ${f.replace(/\.ts$/, '')}`);
  const mod = (await import(new URL(f, import.meta.url).href)) as { run(): Promise<void>; onlyWhenNamed?: boolean };
  // Long fault injections (bench/faults.ts) run only when named: npm run bench -- faults
  if (mod.onlyWhenNamed && !only.includes(f.replace(/\.ts$/, ''))) {
    console.log('  (runs only when named)');
    continue;
  }
  try {
    await mod.run();
  } catch (err) {
    console.log(`  failed: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  }
}
// Whatever a module left pending (a poll, a socket), the figures are printed: end here.
process.exit(process.exitCode ?? 0);
