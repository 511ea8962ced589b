/**
 * The one place a shell word is made. Remote commands travel over SSH as a single string that the remote user's
 * POSIX shell splits again, so every word is quoted here and nowhere else.
 */
import { GpurunError } from '../protocol/errors.ts';

const SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;

/**
 * Quotes one word for a POSIX shell (sh, dash, bash): plain words stay as they are, anything else is put in single
 * quotes, with each `'` written as `'\''`. Inside single quotes nothing is special (`$`, backquotes, `\`, newlines).
 * A NUL byte cannot be passed in an argument at all, so it is refused.
 */
export function quoteShell(word: string): string {
  if (word.includes('\0')) throw new GpurunError('E_BAD_REQUEST', 'an argument contains a NUL byte, which no command can receive', { hint: 'Remove the NUL byte from the command or its environment.' });
  if (word === '') return "''";
  if (SAFE.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** An argv as one command line for a remote shell: each word quoted, joined with spaces. */
export function shellCommand(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error('shellCommand: empty argv');
  return argv.map(quoteShell).join(' ');
}
