import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../support/harness.ts';

describe('package scripts', () => {
  it('npm run test:unit runs the unit tests only: no config that lists the integration and e2e suites', () => {
    const script: string = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts['test:unit'];
    assert.match(script, /\bmocha --no-config\b/);
    assert.match(script, /'test\/unit\/\*\*\/\*\.test\.ts'/);
    assert.doesNotMatch(script, /integration|e2e/);
  });
});
