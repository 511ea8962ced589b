/** Helpers for benchmarks: timing, percentiles, and a broker process of the bench's own. */
import { performance } from 'node:perf_hooks';

/** Comma-separated numbers from an environment variable, or the default (a bench's parts to run, its sizes). */
export function listEnv(name: string, dflt: number[]): number[] {
  const v = process.env[name];
  return v ? v.split(',').map(Number).filter((n) => n > 0) : dflt;
}

export function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

export async function timeIt(fn: () => unknown | Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export function fmt(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}

export function report(name: string, value: string, goal: string, ok: boolean, baseline?: string): void {
  console.log(`  ${name}: ${value}  (goal ${goal}: ${ok ? 'met' : 'NOT met'})${baseline ? `\n      baseline: ${baseline}` : ''}`);
}
