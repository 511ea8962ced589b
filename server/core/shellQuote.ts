/**
 * The ONE function that turns a word into POSIX shell syntax. Everything gpurun hands to a remote shell (a command
 * over SSH, the lines of a Slurm batch script, an sshfs `-o` value) goes through it; nothing else builds shell text
 * from user data. Pure.
 */
import { GpurunError } from '../protocol/errors.ts';

// No "=": a first word like A=b would be read as an assignment, not a command.
const SAFE = /^[A-Za-z0-9_@%+:,./-]+$/;

/**
 * Quotes `word` so that a POSIX shell (sh, dash, bash, zsh) reads it back as exactly one word, byte for byte: plain
 * words stay as they are, anything else goes in single quotes with each `'` written as `'\''`. Inside single quotes
 * nothing is special (`$`, backquotes, `\`, globs, newlines). A NUL byte cannot be passed in an argument at all, so
 * it is refused (E_BAD_REQUEST).
 */
export function quoteShell(word: string): string {
  if (word.includes('\0')) throw new GpurunError('E_BAD_REQUEST', 'an argument contains a NUL byte, which no command can receive', { hint: 'Remove the NUL byte from the command or its environment.' });
  if (word !== '' && SAFE.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** An argv as one command line for a shell: each word quoted with quoteShell, joined with spaces. */
export function shellCommand(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error('shellCommand: empty argv');
  return argv.map(quoteShell).join(' ');
}
