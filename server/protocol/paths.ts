/** Where the embedded default keeps its state. Shared by the broker, the CLI and the VS Code extension. */
import { homedir, platform } from 'node:os';
import { join } from 'node:path';

/** `$GPURUN_HOME`, else `$XDG_DATA_HOME/gpurun`, else the platform's user data folder. */
export function gpurunHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.GPURUN_HOME) return env.GPURUN_HOME;
  if (env.XDG_DATA_HOME) return join(env.XDG_DATA_HOME, 'gpurun');
  if (platform() === 'darwin') return join(homedir(), 'Library', 'Application Support', 'gpurun');
  if (platform() === 'win32') return join(env.LOCALAPPDATA ?? join(homedir(), 'AppData', 'Local'), 'gpurun');
  return join(homedir(), '.local', 'share', 'gpurun');
}

export function embeddedSocket(home: string): string {
  return join(home, 'broker.sock');
}
