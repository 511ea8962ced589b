// mocha's spec reporter, plus one plain closing line "N passed, N failed, N skipped" that CI systems read.
'use strict';
const specModule = require('mocha/lib/reporters/spec.js');
const Spec = specModule.Spec ?? specModule.default ?? specModule;

class GpurunReporter extends Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once('end', () => {
      const s = runner.stats || this.stats;
      process.stdout.write(`\ntests: ${s.passes} passed, ${s.failures} failed, ${s.pending} skipped\n`);
    });
  }
}
module.exports = GpurunReporter;
