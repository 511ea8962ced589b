/** What a move says to a person: the log's marker line and the moved attempt's reason. Pure. */
import type { MoveEvidence } from '../protocol/jobs.ts';
import { formatBytes } from '../core/limits.ts';

/** HH:MM:SS of an ISO time, in UTC (the broker's log times are UTC too). */
function hms(iso: string | undefined): string {
  return iso ? iso.slice(11, 19) : '?';
}

/** `── moved from h1 to h2: <cause>; resumed from checkpoint at 14:02:11 ──` and its line end (or where it went on instead). */
export function moveMarker(ev: MoveEvidence, fellBack?: string): string {
  if (fellBack) return `── not moved to ${ev.to} (${fellBack}); resumed on ${ev.from} from checkpoint at ${hms(ev.checkpointAt)} ──\n`;
  return `── moved from ${ev.from} to ${ev.to}: ${ev.cause}; resumed from checkpoint at ${hms(ev.checkpointAt)} ──\n`;
}

/** The moved attempt's reason: "moved to h2 (gpurun migrate by alice); downtime 1.4 s; copied 10 MB + 1 MB after the checkpoint". */
export function moveWords(ev: MoveEvidence): string {
  const where = ev.fellBack ? `checkpointed; resumed on ${ev.from} (${ev.fellBack})` : `moved to ${ev.to} (${ev.cause})`;
  const parts = [where];
  if (ev.downtimeSec !== undefined) parts.push(`downtime ${ev.downtimeSec} s`);
  if (ev.precopyBytes !== undefined || ev.finalBytes !== undefined) parts.push(`copied ${formatBytes(ev.precopyBytes ?? 0)} while running + ${formatBytes(ev.finalBytes ?? 0)} after the checkpoint`);
  return parts.join('; ');
}
