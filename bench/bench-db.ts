import pg from 'pg'
import { startEmbeddedPostgres } from '../src/embedded/embedded-postgres.js'
import { Postbox } from '../src/index.js'

/**
 * The database of one bench run: DATABASE_URL, or an embedded Postgres. The embedded one runs
 * with synchronous_commit=off: this machine's disk completes only a few hundred fsyncs a second,
 * which would make every figure, baseline and postbox alike, a measure of the disk. Both sides
 * run under the same setting, so the ratios stay honest; crash safety is not what is measured.
 */
export interface BenchDb {
  url: string
  source: string
  pool: pg.Pool
  postbox: Postbox
  schema: string
  /** Runs SQL on the bench pool. */
  sql<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<R[]>
  close(): Promise<void>
}

export const POOL_SIZE = 10
export const CONCURRENCY = 10

export async function openBenchDb(): Promise<BenchDb> {
  const local = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres({ settings: { synchronous_commit: 'off' } })
  const url = process.env.DATABASE_URL ?? (local?.connectionString as string)
  const schema = `postbox_bench_${process.pid}`
  const pool = new pg.Pool({ connectionString: url, max: POOL_SIZE })
  pool.on('error', () => {}) // the embedded server stops under idle clients at the end
  const postbox = new Postbox({ connectionString: url, schema, poolSize: POOL_SIZE })
  await postbox.migrate()
  // The baselines write to a table shaped exactly like postbox's, indexes included, minus postbox.
  await pool.query(`CREATE TABLE ${schema}.raw_messages (LIKE ${schema}.messages INCLUDING ALL)`)
  return {
    url,
    source: local ? 'embedded-postgres (synchronous_commit=off)' : 'DATABASE_URL',
    pool,
    postbox,
    schema,
    sql: async (text, values) => (await pool.query(text, values)).rows,
    close: async () => {
      await postbox.close()
      await pool.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {})
      await pool.end()
      await local?.stop()
    },
  }
}

/** A Postbox on the bench's schema whose own pool counts the statements it runs, for the cost figures. */
export function countingPostbox(db: BenchDb): { postbox: Postbox; statements: () => number; close(): Promise<void> } {
  let statements = 0
  const pool = new pg.Pool({ connectionString: db.url, max: POOL_SIZE })
  const query = pool.query.bind(pool) as (...a: unknown[]) => unknown
  ;(pool as unknown as { query: (...a: unknown[]) => unknown }).query = (...a: unknown[]) => {
    statements++
    return query(...a)
  }
  const postbox = new Postbox({ pool, schema: db.schema })
  return {
    postbox,
    statements: () => statements,
    close: async () => {
      await postbox.close()
      await pool.end()
    },
  }
}
