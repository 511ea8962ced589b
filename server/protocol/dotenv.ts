/** The `.env` file parser, re-exported for the VS Code extension (which imports nothing from server/ but protocol/). */
export { parseEnvFile, type EnvFileResult } from '../core/dotenv.ts';
