/**
 * The extension test suite (test/vscode/suite) in desktop VS Code through @vscode/test-electron, which downloads VS
 * Code. Where it cannot be downloaded (no internet, as on the project's machines) this skips and says why; the same
 * flows run in code-server's VS Code in vscode.test.ts and vscodeEmbedded.test.ts.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { downloadAndUnzipVSCode, runTests } from '@vscode/test-electron';
import { cleanup, ROOT, scratch } from '../support/harness.ts';

describe('VS Code extension in desktop VS Code (@vscode/test-electron)', function () {
  this.timeout(600_000);

  it('runs the extension test suite', async function () {
    if (process.env.GPURUN_VSCODE_DESKTOP === '0') {
      console.log('      skipped: GPURUN_VSCODE_DESKTOP=0');
      this.skip();
    }
    // One request decides whether VS Code can be downloaded at all; the download itself has no time limit.
    const reachable = await fetch('https://update.code.visualstudio.com/api/releases/stable', { signal: AbortSignal.timeout(10_000) })
      .then((r) => (r.ok ? undefined : `HTTP ${r.status}`))
      .catch((e: Error) => `${e.message}${(e.cause as Error | undefined)?.message ? `: ${(e.cause as Error).message}` : ''}`);
    if (reachable) {
      console.log(`      skipped: desktop VS Code cannot be downloaded here (update.code.visualstudio.com: ${reachable}); the end-to-end suites run in code-server's VS Code instead`);
      this.skip();
    }
    const vscodeExecutablePath = await downloadAndUnzipVSCode('stable');
    const dir = scratch('gpurun-desktop-');
    try {
      const ws = join(dir, 'project');
      mkdirSync(ws);
      writeFileSync(join(ws, 'train.py'), 'print("epoch 1", flush=True)\nif __name__ == "__main__":\n    print("done", flush=True)\n');
      await runTests({
        vscodeExecutablePath,
        extensionDevelopmentPath: ROOT,
        extensionTestsPath: join(ROOT, 'test', 'vscode', 'suite', 'index.cjs'),
        launchArgs: [ws, '--disable-extensions', '--disable-workspace-trust', `--user-data-dir=${join(dir, 'user-data')}`],
        extensionTestsEnv: { GPURUN_HOME: join(dir, 'gpurun-home') },
      });
    } finally {
      cleanup(dir);
    }
  });
});
