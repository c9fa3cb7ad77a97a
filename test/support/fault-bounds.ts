import type pg from 'pg'
import type { ChildWorker } from './child-worker.js'
import { ledgerReport, type LedgerReport } from './ledger.js'
import { waitFor } from './wait-for.js'

// What a fault can duplicate, counted rather than guessed. A delivery is handled twice only if
// its handler's effect committed and its ack did not. At the fault, the deliveries not yet acked
// are the messages that still hold a lease (lease IS NOT NULL: claimed, and not acked, nacked or
// released), counted in the database, where nothing is lost in transit. After it, acks can still
// fail while pools reconnect and leases of 1 s run out on a loaded machine; those deliveries are
// counted from the workers' own events. The ledger's duplicates must stay within the counts.

/** Ids of the messages of these queues claimed and not yet acked, nacked or released. */
export async function unackedIds(db: Pick<pg.Pool, 'query'>, schema: string, queues: readonly string[]): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT id::text FROM "${schema}".messages WHERE queue = ANY ($1) AND lease IS NOT NULL ORDER BY id`, [queues])
  return rows.map((r) => r.id)
}

/**
 * Runs a fault that kills database sessions (terminated backends, a crashed server) at a moment
 * when the unacked deliveries are known exactly: a transaction locks `messages` against every
 * writer (claims, acks, sends wait), reads the unacked ids, and then the fault strikes while the
 * lock is held. Returns those ids. The locking session may die with the fault; that is expected.
 */
export async function unackedAtFault(pool: pg.Pool, schema: string, queues: readonly string[], fault: () => Promise<unknown>): Promise<string[]> {
  return readAtFault(pool, [`"${schema}".messages`], (client) => unackedIds(client, schema, queues), fault)
}

/**
 * Locks `tables` against every writer in a transaction, reads what `read` returns, then runs the
 * fault while the lock is held, so that what was read is exactly the state the fault met. The
 * locking session may die with the fault; that is expected.
 */
export async function readAtFault<T>(pool: pg.Pool, tables: readonly string[], read: (client: pg.PoolClient) => Promise<T>, fault: () => Promise<unknown>): Promise<T> {
  const client = await pool.connect()
  const onError = () => {} // the fault may take this session too
  client.on('error', onError)
  let broken: Error | undefined
  try {
    await client.query('BEGIN')
    await client.query(`LOCK TABLE ${tables.join(', ')} IN EXCLUSIVE MODE`)
    const result = await read(client)
    await fault()
    await client.query('COMMIT').catch((error: Error) => {
      broken = error
    })
    return result
  } finally {
    client.off('error', onError)
    client.release(broken ?? false)
  }
}

/**
 * The ledger report once the queues hold no message at all (every one acked or dead-lettered), so
 * that a late redelivery and its duplicate are seen, not missed by a report taken as soon as
 * nothing was lost.
 */
export async function drainedLedgerReport(pool: pg.Pool, schema: string, queues: readonly string[], timeoutMs = 30_000): Promise<LedgerReport> {
  await waitFor(`queues ${queues.join(', ')} drained`, async () => {
    const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".messages WHERE queue = ANY ($1)`, [queues])
    return rows[0]!.n === 0
  }, { timeoutMs, intervalMs: 100 })
  return ledgerReport(pool, schema, queues)
}

/**
 * Deliveries that worker processes started and never reported acked ('completed'), from their
 * events read to the end (call it once they have exited). Each handling beyond a message's first
 * needs a delivery of it that was not acked (only one ack per message can succeed), so the
 * ledger's duplicates can never exceed this: a duplicate it does not account for would mean two
 * acks of one message both succeeded, or a delivery the worker never reported.
 */
export function deliveriesNotAcked(children: readonly ChildWorker[]): number {
  let open = 0
  for (const child of children) {
    const started = new Map<string, number>()
    for (const e of child.events) {
      const key = `${e.id}:${e.attempt}`
      if (e.event === 'started') started.set(key, (started.get(key) ?? 0) + 1)
      if (e.event === 'completed') started.set(key, (started.get(key) ?? 0) - 1)
    }
    for (const n of started.values()) open += Math.max(0, n)
  }
  return open
}

/** Handlings beyond the first of the given messages, from the ledger. */
export async function duplicatesAmong(pool: pg.Pool, schema: string, ids: readonly string[]): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(
    `SELECT coalesce(sum(n - 1), 0)::int AS n FROM (SELECT count(*) AS n FROM "${schema}".ledger_handled WHERE id = ANY ($1) GROUP BY id) h`, [[...new Set(ids)]])
  return rows[0]!.n
}
