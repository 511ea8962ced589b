/**
 * Debug on GPU, the pure part: the job's command that starts a program under debugpy, and what its output says.
 * The command is `PYTHON -c BOOT PORT PROGRAM ARGS…`: BOOT is constant text, the program and its arguments reach it
 * only as argv words. It says clearly when debugpy is missing, else listens, prints one line (the port and the
 * folder the program runs in, for the source mapping), waits for the editor, then runs the program as `__main__`.
 * It listens on 0.0.0.0 only inside a container (reached from the host at the container's address); on a host
 * without Docker, on 127.0.0.1 (debugpy has no password, so it is not offered to the host's network).
 */

const BOOT = `import os, sys, runpy
port, prog = int(sys.argv[1]), sys.argv[2]
try:
    import debugpy
except ImportError:
    print("gpurun: debugpy is not installed for " + sys.executable + ": install it in the job's image or environment (pip install debugpy), or set \\"python\\" in the launch configuration to an interpreter that has it", flush=True)
    sys.exit(127)
debugpy.listen(("0.0.0.0" if os.path.exists("/.dockerenv") else "127.0.0.1", port))
print("gpurun: debugpy %s listening on port %d in %s" % (debugpy.__version__, port, os.getcwd()), flush=True)
debugpy.wait_for_client()
sys.argv = [prog] + sys.argv[3:]
sys.path.insert(0, os.path.dirname(os.path.abspath(prog)))
runpy.run_path(os.path.abspath(prog), run_name="__main__")
`;

/** The port debugpy listens on in the job unless the launch configuration says another. */
export const DEBUG_PORT = 5678;

/** The job's command: `program` (relative to the workspace) under debugpy on `port`. */
export function debugpyCommand(python: string, program: string, args: readonly string[], port = DEBUG_PORT): string[] {
  return [python, '-c', BOOT, String(port), program, ...args];
}

/** What the job's output says so far: debugpy is ready (its port and the job's folder), or missing, or not yet. */
export function debugState(output: string): { ready: { port: number; cwd: string } } | { missing: string } | undefined {
  const ready = /^gpurun: debugpy \S+ listening on port (\d+) in (.+?)\r?$/m.exec(output);
  if (ready) return { ready: { port: Number(ready[1]), cwd: ready[2] } };
  const missing = /^gpurun: debugpy is not installed.*$/m.exec(output);
  return missing ? { missing: missing[0].replace(/^gpurun: /, '').trim() } : undefined;
}
