import type { BenchDb } from './bench-db.js'
import { CONCURRENCY } from './bench-db.js'
import { drain, throughput } from './measure.js'

// The raw-SQL baselines every postbox figure is divided by: plain pg, the same pool and
// concurrency, a table shaped like postbox's (indexes included), and none of postbox's work.

const PAYLOAD = JSON.stringify({ to: 'someone@example.com', template: 'welcome', n: 42 })

/** A bare one-row INSERT loop, 10 callers, no NOTIFY: rows per second. */
export function rawInsertLoop(db: BenchDb, durationMs: number): Promise<number> {
  const text = `INSERT INTO ${db.schema}.raw_messages (queue, payload) VALUES ($1, $2)`
  return throughput(CONCURRENCY, durationMs, async () => {
    await db.pool.query(text, ['raw', PAYLOAD])
    return 1
  })
}

/** A bare multi-row INSERT of `rows` rows per statement, 10 callers: rows per second. */
export function rawMultiInsert(db: BenchDb, durationMs: number, rows = 1000): Promise<number> {
  const values = Array.from({ length: rows }, (_, i) => `($1, $${i + 2})`).join(', ')
  const text = `INSERT INTO ${db.schema}.raw_messages (queue, payload) VALUES ${values}`
  const params = ['raw', ...Array.from({ length: rows }, () => PAYLOAD)]
  return throughput(CONCURRENCY, durationMs, async () => {
    await db.pool.query(text, params)
    return rows
  })
}

/** Fills the raw table with `count` ready rows of one queue. */
export async function preloadRaw(db: BenchDb, count: number): Promise<void> {
  await db.sql(`TRUNCATE ${db.schema}.raw_messages`)
  await db.sql(
    `INSERT INTO ${db.schema}.raw_messages (queue, payload) SELECT 'raw', $1::jsonb FROM generate_series(1, $2)`,
    [PAYLOAD, count],
  )
  await db.sql(`VACUUM ANALYZE ${db.schema}.raw_messages`)
}

/** The raw at-most-once drain: DELETE … LIMIT 100 FOR UPDATE SKIP LOCKED RETURNING, 10 callers. */
export function rawDrain(db: BenchDb): Promise<number> {
  const text = `DELETE FROM ${db.schema}.raw_messages WHERE id IN (
    SELECT id FROM ${db.schema}.raw_messages WHERE queue = 'raw' AND available_at <= now()
    ORDER BY priority DESC, available_at, id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING *`
  return drain(CONCURRENCY, async () => (await db.pool.query(text)).rowCount ?? 0)
}

export { PAYLOAD }
