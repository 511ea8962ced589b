/** Run configurations (gpurun.json), re-exported for the VS Code extension (which imports only protocol/ from server/). */
export { parseRunConfigs, RUN_CONFIG_FILE, type RunConfig } from '../core/runConfigs.ts';
