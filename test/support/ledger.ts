import type pg from 'pg'
import type { Postbox } from '../../src/index.js'

// The ledger of a fault test: which messages were sent (written in the sending transaction, so a
// row exists if and only if the send committed) and which were handled (written by the handler,
// one row per handling, with its attempt). Comparing the two gives what was lost, duplicated or
// never sent at all, whatever happened to processes and connections in between.

/** Creates the ledger tables in a test schema (idempotent). */
export async function createLedger(pool: pg.Pool, schema: string): Promise<void> {
  await pool.query(`
    CREATE TABLE IF NOT EXISTS "${schema}".ledger_sent (
      id bigint PRIMARY KEY,
      queue text NOT NULL,
      sent_at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE TABLE IF NOT EXISTS "${schema}".ledger_handled (
      id bigint NOT NULL,
      attempt integer NOT NULL,
      pid integer NOT NULL,
      transactional boolean NOT NULL,
      handled_at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX IF NOT EXISTS ledger_handled_id ON "${schema}".ledger_handled (id);`)
}

/**
 * Sends payloads to a queue and records them in the ledger, in one transaction; with `rollback`
 * the transaction is rolled back instead (neither the messages nor their ledger rows exist).
 * Returns the ids sendBatch gave.
 */
export async function sendRecorded(
  postbox: Postbox,
  pool: pg.Pool,
  schema: string,
  queue: string,
  payloads: readonly unknown[],
  options: { rollback?: boolean } = {},
): Promise<string[]> {
  const client = await pool.connect()
  // pg-pool takes its error listener off a checked-out client: without one of our own, the
  // server going away between two statements would be an uncaught 'error' event.
  const onError = () => {}
  client.on('error', onError)
  let broken: Error | undefined
  try {
    await client.query('BEGIN')
    const ids = await postbox.sendBatch(queue, payloads, { tx: client })
    await client.query(`INSERT INTO "${schema}".ledger_sent (id, queue) SELECT unnest($1::bigint[]), $2`, [ids, queue])
    await client.query(options.rollback ? 'ROLLBACK' : 'COMMIT')
    return ids
  } catch (error) {
    broken = error as Error
    await client.query('ROLLBACK').catch(() => {})
    throw error
  } finally {
    client.off('error', onError)
    client.release(broken)
  }
}

/** What the ledger says about some queues. */
export interface LedgerReport {
  /** Messages whose send committed. */
  sent: number
  /** Distinct messages handled at least once. */
  handled: number
  /** Handlings in all, duplicates included. */
  handlings: number
  /** Sent, never handled and not in a dead letter. */
  lost: number
  lostIds: string[]
  /** Handlings beyond the first of each message. */
  duplicates: number
  /** Most handlings of one message. */
  maxPerMessage: number
  /** Handled although no committed send has that id (a rolled-back send, or garbage). */
  unexpected: number
  /** Sent messages that are now in a dead-letter queue (never handled successfully). */
  dead: number
}

/** Compares sent and handled for the given queues. */
export async function ledgerReport(pool: pg.Pool, schema: string, queues: readonly string[]): Promise<LedgerReport> {
  const { rows } = await pool.query<LedgerReport & { lost_ids: string[]; max_per_message: number }>(
    `WITH sent AS (SELECT id FROM "${schema}".ledger_sent WHERE queue = ANY ($1)),
          handled AS (SELECT id, count(*)::int AS n FROM "${schema}".ledger_handled WHERE id IN (SELECT id FROM sent) GROUP BY id),
          dead AS (SELECT m.id FROM "${schema}".messages m WHERE m.original_queue = ANY ($1) AND m.id IN (SELECT id FROM sent)),
          stray AS (SELECT DISTINCT h.id FROM "${schema}".ledger_handled h
                    WHERE NOT EXISTS (SELECT 1 FROM "${schema}".ledger_sent s WHERE s.id = h.id))
     SELECT (SELECT count(*)::int FROM sent) AS sent,
            (SELECT count(*)::int FROM handled) AS handled,
            (SELECT coalesce(sum(n), 0)::int FROM handled) AS handlings,
            (SELECT coalesce(sum(n - 1), 0)::int FROM handled) AS duplicates,
            (SELECT coalesce(max(n), 0)::int FROM handled) AS max_per_message,
            (SELECT count(*)::int FROM dead) AS dead,
            (SELECT count(*)::int FROM stray) AS unexpected,
            (SELECT coalesce(array_agg(s.id::text ORDER BY s.id), '{}') FROM sent s
             WHERE s.id NOT IN (SELECT id FROM handled) AND s.id NOT IN (SELECT id FROM dead)) AS lost_ids`,
    [queues],
  )
  const row = rows[0]!
  return {
    sent: row.sent,
    handled: row.handled,
    handlings: row.handlings,
    lost: row.lost_ids.length,
    lostIds: row.lost_ids,
    duplicates: row.duplicates,
    maxPerMessage: row.max_per_message,
    unexpected: row.unexpected,
    dead: row.dead,
  }
}

/** A producer loop that sends recorded batches until stopped, riding out database failures. */
export interface Producer {
  /** Stops the loop; resolves with what it did. */
  stop(): Promise<ProducerStats>
}

export interface ProducerStats {
  /** Ids of batches whose COMMIT succeeded: these must be handled. */
  committed: string[]
  /** Ids of batches rolled back on purpose: these must never be handled. */
  rolledBack: string[]
  /** Batches that failed (connection lost, server down): their outcome is whatever the ledger says. */
  failures: number
}

/**
 * Sends a batch of `batch` messages every `intervalMs` to each queue, every `rollbackEvery`-th
 * batch rolled back on purpose. Errors (the server restarting) are counted and the loop goes on.
 */
export function startProducer(options: {
  postbox: Postbox
  pool: pg.Pool
  schema: string
  queues: readonly string[]
  batch?: number
  intervalMs?: number
  rollbackEvery?: number
  payload?: (n: number) => unknown
}): Producer {
  const { postbox, pool, schema, queues, batch = 5, intervalMs = 20, rollbackEvery = 7, payload = (n) => ({ n }) } = options
  const stats: ProducerStats = { committed: [], rolledBack: [], failures: 0 }
  let running = true
  const loop = (async () => {
    for (let round = 1; running; round++) {
      for (const queue of queues) {
        const rollback = round % rollbackEvery === 0
        try {
          const ids = await sendRecorded(postbox, pool, schema, queue, Array.from({ length: batch }, (_, i) => payload(round * batch + i)), { rollback })
          ;(rollback ? stats.rolledBack : stats.committed).push(...ids)
        } catch {
          stats.failures++
        }
      }
      await new Promise((resolve) => setTimeout(resolve, intervalMs))
    }
  })()
  return {
    stop: async () => {
      running = false
      await loop
      return stats
    },
  }
}
