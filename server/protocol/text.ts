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
