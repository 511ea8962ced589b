/** GPU usage helpers, re-exported for the VS Code extension (which imports nothing from server/ but protocol/). */
export { IDLE_AFTER_MS, idleForMs, idleWindowMs, sparkline } from '../core/gpuUsage.ts';
