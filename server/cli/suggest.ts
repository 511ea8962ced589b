/** "Did you mean …?" for a mistyped subcommand or option: the nearest known word by edit distance. Pure. */
import { editDistance } from '../core/editDistance.ts';

/**
 * The known word closest to `word`, if it is close enough to be a typo (at most a third of its length wrong, at least
 * one edit), or a known word that `word` is the start of (`--gpu` → `--gpus`). Undefined when nothing is near.
 */
export function closest(word: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const dist = k.startsWith(word) && word.length >= 2 ? 0.5 : editDistance(word, k);
    if (dist < bestD) {
      bestD = dist;
      best = k;
    }
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}
