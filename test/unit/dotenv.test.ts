import assert from 'node:assert/strict';
import { parseEnvFile } from '../../server/core/dotenv.ts';

describe('env file', () => {
  it('reads NAME=VALUE lines, comments, export and quotes, expanding nothing', () => {
    const r = parseEnvFile('# settings\n\nSEED=1\nexport HF_HOME=/cache/hf\nMSG="a \\"b\\"\\nc"\nLIT=\'$HOME and \\n\'\nEMPTY=\n  SPACED =  x y  \nREF=$SEED\n');
    assert.deepEqual(r.errors, []);
    assert.deepEqual(r.env, { SEED: '1', HF_HOME: '/cache/hf', MSG: 'a "b"\nc', LIT: '$HOME and \\n', EMPTY: '', SPACED: 'x y', REF: '$SEED' });
  });
  it('names the line of each mistake', () => {
    const r = parseEnvFile('OK=1\njust words\n1BAD=x\nQ="open\n');
    assert.deepEqual(r.errors, [
      { line: 2, message: 'expected NAME=VALUE' },
      { line: 3, message: '"1BAD" is not a variable name (letters, digits, _; not starting with a digit)' },
      { line: 4, message: 'unclosed " quote' },
    ]);
  });
});
