/**
 * The ONE function that turns a word into POSIX shell syntax. Everything gpurun hands to a remote shell (the lines
 * of a batch script, a command over SSH) goes through it; nothing else builds shell text from user data. Pure.
 */

/**
 * Quotes `word` so that a POSIX shell (sh, bash, dash, zsh) reads it back as exactly one word, byte for byte:
 * single quotes around it, each `'` written as `'\''`. Newlines, `$`, backticks, globs and spaces need nothing else
 * inside single quotes. Throws on a NUL byte, which no shell word (and no argv entry) can hold.
 */
export function shQuote(word: string): string {
  if (word.includes('\0')) throw new Error('a shell word cannot contain a NUL byte');
  // No "=": a first word like A=b would be read as an assignment.
  if (word !== '' && /^[A-Za-z0-9_@%+:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** A command line for a shell: every word quoted with shQuote, joined by spaces. */
export function shJoin(argv: readonly string[]): string {
  return argv.map(shQuote).join(' ');
}
