// Extension test suite run INSIDE desktop VS Code's extension host by @vscode/test-electron (test/e2e/desktop.test.ts).
// Plain CommonJS: the extension host loads it as is. It drives the extension through its commands and checks what a
// person would see: the job's terminal and the job's end state.
const assert = require('node:assert/strict');
const path = require('node:path');
const vscode = require('vscode');
const Mocha = require('mocha');

function suite() {
  describe('GPU Run in desktop VS Code', function () {
    this.timeout(120000);
    it('Run Current File on GPU runs train.py on the local broker and opens its terminal', async () => {
      const ext = vscode.extensions.getExtension('gpurun.gpurun');
      assert.ok(ext, 'the extension is installed');
      const api = await ext.activate();
      const folder = vscode.workspace.workspaceFolders[0].uri.fsPath;
      const doc = await vscode.workspace.openTextDocument(path.join(folder, 'train.py'));
      await vscode.window.showTextDocument(doc);
      await vscode.commands.executeCommand('gpurun.runCurrentFile');
      let job;
      for (let i = 0; i < 600 && !(job && job.state === 'succeeded'); i++) {
        job = api.jobs().find((j) => j.command.includes('train.py'));
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(job && job.state, 'succeeded');
      assert.ok(vscode.window.terminals.some((t) => t.name === `gpurun: ${job.id} train.py`), 'the job has its terminal');
    });
  });
}

exports.run = function run() {
  const mocha = new Mocha({ ui: 'bdd', color: false, timeout: 120000 });
  mocha.suite.emit('pre-require', global, 'suite.cjs', mocha);
  suite();
  return new Promise((resolve, reject) => mocha.run((failures) => (failures ? reject(new Error(`${failures} test(s) failed`)) : resolve())));
};
