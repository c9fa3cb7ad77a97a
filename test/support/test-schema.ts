import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { afterAll, beforeAll, inject } from 'vitest'
import { Postbox } from '../../src/postbox.js'
import type { PostboxOptions } from '../../src/postbox-options.js'

/** What a test file gets: its own migrated schema, a pool, and a Postbox on it. */
export interface TestSchema {
  readonly url: string
  /**
   * A connection string for a session of its own (LISTEN): Postgres directly, also when `url`
   * goes through a pooler in transaction mode. A Postbox of `newPostbox()` listens here unless
   * it is given a connection string or pool of its own.
   */
  readonly listenUrl: string
  readonly schema: string
  /** A plain pg pool for the test's own SQL and transactions. */
  readonly pool: pg.Pool
  /** A Postbox on this file's schema, closed after the file. */
  readonly postbox: Postbox
  /** Another Postbox on the same schema; the caller closes it. */
  newPostbox(options?: Partial<PostboxOptions>): Postbox
  /** Runs SQL on the test pool and returns its rows. */
  sql<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<R[]>
}

/** A unique schema name, so test files run in parallel without seeing each other's rows. */
export function uniqueSchemaName(prefix = 't'): string {
  return `${prefix}_${randomBytes(6).toString('hex')}`
}

/**
 * Gives this test file its own schema: created and migrated before the first test, dropped after
 * the last. Use at the top level of a test file.
 */
export function useTestSchema(options: { migrate?: boolean } = {}): TestSchema {
  const url = inject('databaseUrl')
  const listenUrl = inject('listenUrl')
  const schema = uniqueSchemaName()
  const pool = new pg.Pool({ connectionString: url, max: 20 })
  pool.on('error', () => {}) // tests terminate backends on purpose
  // LISTEN goes to listenUrl, unless the caller gives a connection of its own, which it then follows.
  const newPostbox = (extra: Partial<PostboxOptions> = {}) =>
    new Postbox({
      connectionString: url,
      ...('connectionString' in extra || 'pool' in extra ? {} : { listenConnectionString: listenUrl }),
      schema,
      ...extra,
    })
  const postbox = newPostbox()
  beforeAll(async () => {
    if (options.migrate !== false) await postbox.migrate()
  })
  afterAll(async () => {
    await postbox.close()
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    await pool.end()
  })
  return {
    url,
    listenUrl,
    schema,
    pool,
    postbox,
    newPostbox,
    sql: async (text, values) => (await pool.query(text, values)).rows,
  }
}
