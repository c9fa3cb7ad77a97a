import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'
import { windowReopensSql } from './flow.js'
import { statement } from './messages.js'

/** What arming a wait learns: whether senders have settled, and when a full rate window reopens. */
export interface ArmedWait {
  /** False while a sender may still be inside a transaction that sent to one of the queues. */
  settled: boolean
  /**
   * Milliseconds until the first full rate window of the queues has room again (a throttled key,
   * or a queue's own rate), or null when none is full. No NOTIFY says that a window moved on, so
   * a consumer of a rate-limited queue sleeps no longer than this.
   */
  reopensInMs: number | null
}

interface ArmedWaitRow {
  settled: boolean | null
  reopens_ms: number | null
}

const armedWait = (row: ArmedWaitRow | undefined): ArmedWait => ({ settled: row?.settled ?? true, reopensInMs: row?.reopens_ms ?? null })

/**
 * Records that this listener waits on `stale` until ttl from now and has not been told yet, so
 * the next sender NOTIFYs, and tells in the same statement whether senders have settled on
 * `queues` (see {@link sendersSettled}). A row a sender is marking notified right now is skipped
 * rather than waited for: that sender notifies at its commit, or rolls back and leaves the row as
 * it was (and holds its queue's lock meanwhile, so this reports not settled). Rows of other
 * listeners that died are cleared on the way, also skipping locked ones. Nothing here waits for a
 * sender's transaction: a sender that woke us and stays open (an outbox transaction, an append
 * held open) holds a lock on our row until it ends, and an insert that met the row in the unique
 * index (ON CONFLICT) or a delete of it would wait that long; so the insert is only for rows this
 * statement does not see at all.
 *
 * One statement, not two: the exclusive try-lock is held until the registration commits, and a
 * sender takes its shared lock in a statement before the one that reads the waiters, so a sender
 * either held its lock before (not settled: the caller looks again shortly) or reads the
 * waiters after the registration committed (and notifies). Going idle cost three round trips
 * (register, try-lock, look again); now two.
 */
export async function registerWaiter(
  db: Executor,
  s: SchemaName,
  stale: readonly string[],
  listener: string,
  ttlMs: number,
  queues: readonly string[],
): Promise<ArmedWait> {
  const { rows } = await db.query<ArmedWaitRow>(
    `WITH expired AS (
       DELETE FROM ${s.sql}.waiters w
       USING (SELECT queue, listener FROM ${s.sql}.waiters
              WHERE queue = ANY ($1) AND listener <> $2 AND expires_at < now() - interval '1 minute'
              FOR UPDATE SKIP LOCKED) dead
       WHERE w.queue = dead.queue AND w.listener = dead.listener
     ), mine AS (
       SELECT queue FROM ${s.sql}.waiters WHERE queue = ANY ($1) AND listener = $2 FOR UPDATE SKIP LOCKED
     ), renewed AS (
       UPDATE ${s.sql}.waiters w SET expires_at = now() + $3 * interval '1 millisecond', notified = false
       FROM mine WHERE w.queue = mine.queue AND w.listener = $2
     ), inserted AS (
       INSERT INTO ${s.sql}.waiters (queue, listener, expires_at)
       SELECT q, $2, now() + $3 * interval '1 millisecond' FROM unnest($1::text[]) q
       WHERE NOT EXISTS (SELECT 1 FROM ${s.sql}.waiters w WHERE w.queue = q AND w.listener = $2)
       ON CONFLICT (queue, listener) DO NOTHING
     )
     SELECT bool_and(pg_try_advisory_xact_lock(${s.sql}.wake_key(q))) AS settled, ${windowReopensSql(s, '$4')} AS reopens_ms FROM unnest($4::text[]) q`,
    [stale, listener, ttlMs, queues],
    statement(s, 'register_waiter'),
  )
  return armedWait(rows[0])
}

/** Says this listener no longer waits on the queues (it is closing). */
export async function unregisterWaiter(db: Executor, s: SchemaName, queues: readonly string[], listener: string): Promise<void> {
  await db.query(`DELETE FROM ${s.sql}.waiters WHERE queue = ANY ($1) AND listener = $2`, [queues, listener])
}

/**
 * True when no sender is inside a transaction that sent to any of the queues: each sender holds
 * the queue's wake_key lock shared until it commits, so the exclusive try-lock fails while one
 * does. Taken and released in this one statement.
 */
export async function sendersSettled(db: Executor, s: SchemaName, queues: readonly string[]): Promise<ArmedWait> {
  const { rows } = await db.query<ArmedWaitRow>(
    `SELECT bool_and(pg_try_advisory_xact_lock(${s.sql}.wake_key(q))) AS settled, ${windowReopensSql(s, '$1')} AS reopens_ms FROM unnest($1::text[]) q`,
    [queues],
    statement(s, 'senders_settled'),
  )
  return armedWait(rows[0])
}
