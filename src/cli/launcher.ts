// A node started through a package manager (`npx baton run`, `npm start`) runs under the shell that the
// package manager starts for it (`sh -c`). npm passes SIGTERM to that shell, which dies of it: the signal
// never reaches the node, which would run on with nobody waiting for it. So such a node watches its launcher.

/** How often the parent process is looked at. */
export const LAUNCHER_CHECK_MS = 500;

/**
 * True when a package manager's script runner started this process: npm (`npx`, `npm run`, `npm start`),
 * yarn and pnpm all set `npm_lifecycle_event`. Started otherwise (a shell, systemd, a container), a node does
 * not watch its parent: `nohup baton run &` may outlive the shell that started it.
 */
export function startedByPackageManager(env: Record<string, string | undefined>): boolean {
  return env['npm_lifecycle_event'] !== undefined;
}

/**
 * This process's parent when the CLI started. Taken at load, not when a command starts watching: a launcher
 * that exits while the command still opens its store must not be missed (the parent would already be init).
 */
const LAUNCHER_AT_START = process.ppid;

/**
 * Calls `onGone` once, with the pid of the process that launched this one, when that process has exited (this
 * process then belongs to init or a subreaper), also when it exited before the call. Returns a function that
 * stops watching. The check does not keep the process alive.
 */
export function watchLauncher(
  onGone: (launcherPid: number) => void,
  everyMs = LAUNCHER_CHECK_MS,
): () => void {
  const launcher = LAUNCHER_AT_START;
  const timer = setInterval(() => {
    if (process.ppid === launcher) return;
    clearInterval(timer);
    onGone(launcher);
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
