#!/usr/bin/env node
// The gpurun command. The bundle is built by `npm run build` (npm start and npm test do it first).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const bundle = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
if (!existsSync(bundle)) {
  process.stderr.write('gpurun: error: the CLI is not built yet\ngpurun: run `npm run build` in ' + fileURLToPath(new URL('..', import.meta.url)) + '\n');
  process.exit(1);
}
await import(bundle);
