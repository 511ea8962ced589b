/**
 * The two messages `gpurun lsp` adds to the Language Server Protocol, shared with the VS Code extension (its client).
 */

/** Request: `{uri}` → `{estimate?: "~now" | "~queued #N" | "never fits"}` for the document's `# gpurun:` lines; no
 * estimate while the broker is unreachable, the lines have errors, or the job goes to a Slurm cluster. */
export const LSP_ESTIMATE_REQUEST = 'gpurun/estimate';

/** Notification from the server: `{online: boolean}` — the pool changed (or the broker came or went). */
export const LSP_POOL_CHANGED = 'gpurun/poolChanged';

export interface EstimateResult {
  estimate?: string;
}
