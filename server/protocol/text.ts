/** Small text helpers shared by the CLI and the extension. Pure. */

/** The last `n` lines of `text` (a final line without a newline counts). */
export function lastLines(text: string, n: number): string {
  if (n <= 0) return '';
  let end = text.length;
  if (text.endsWith('\n')) end--;
  let i = end;
  for (let k = 0; k < n; k++) {
    i = text.lastIndexOf('\n', i - 1);
    if (i < 0) return text;
  }
  return text.slice(i + 1);
}

/** A size for people: 1024-based units (`2.9 MiB`, `0 B`). */
export function formatBytes(n: number): string {
  for (const [u, f] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (n >= f) return `${+(n / f).toFixed(1)} ${u}iB`;
  }
  return `${n} B`;
}
