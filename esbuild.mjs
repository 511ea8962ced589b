// Bundles the CLI (which also runs the broker) and the job shim into dist/.
import { build } from 'esbuild';

const common = {
  bundle: true,
  platform: 'node',
  target: 'node22',
  format: 'esm',
  sourcemap: 'linked',
  logLevel: 'warning',
  // ESM bundles of CommonJS dependencies (undici) need a require().
  // ssh2's optional native parts (cpu-features, sshcrypto.node) are never built (allowScripts denies them); ssh2
  // falls back to pure JavaScript when requiring them fails.
  external: ['cpu-features', '*.node'],
  // (ssh2 also reads __dirname.)
  banner: {
    js: "import { createRequire as __gpurunRequire } from 'node:module'; const require = __gpurunRequire(import.meta.url); import { fileURLToPath as __gpurunPath } from 'node:url'; const __filename = __gpurunPath(import.meta.url); const __dirname = __gpurunPath(new URL('.', import.meta.url));",
  },
};

await Promise.all([
  build({ ...common, entryPoints: ['server/cli/main.ts'], outfile: 'dist/cli.js' }),
  // The broker needs node:sqlite (Node >= 22.5); the CLI loads it only for `gpurun broker` and `gpurun token`.
  build({ ...common, entryPoints: ['server/main.ts'], outfile: 'dist/broker.js' }),
  // The shim outlives the broker; keep it tiny so a job starts fast.
  build({ ...common, entryPoints: ['server/runtimes/shim.ts'], outfile: 'dist/shim.js' }),
]);

// The VS Code extension: CommonJS (package.json is "type": "module", hence .cjs); `vscode` is the editor's.
await build({
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: 'linked',
  logLevel: 'warning',
  external: ['vscode'],
  entryPoints: ['extension/main.ts'],
  outfile: 'dist/extension.cjs',
});
