import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'

/** A queue's settings as stored, durations in milliseconds. */
export interface QueueRow {
  name: string
  visibility_timeout_ms: number
  max_attempts: number
  backoff_type: 'fixed' | 'exponential'
  backoff_base_ms: number
  backoff_max_ms: number
  backoff_jitter: boolean
  dead_letter: string | null
  max_payload_bytes: number
  retention_ms: number | null
  /** Flow control (queue_flow), NULL when not set. */
  max_in_flight: number | null
  rate_limit: number | null
  rate_per_ms: number | null
  key_rate_limit: number | null
  key_rate_per_ms: number | null
  paused: boolean
  dedupe_window_ms: number | null
  created_at: Date
  updated_at: Date
}

export type QueueSettings = Omit<QueueRow, 'name' | 'created_at' | 'updated_at' | 'paused'>

const ms = (column: string) => `(extract(epoch FROM ${column}) * 1000)::float8 AS ${column}_ms`
const COLUMNS = `name, ${ms('visibility_timeout')}, max_attempts, backoff_type, ${ms('backoff_base')}, ${ms('backoff_max')},
  backoff_jitter, dead_letter, max_payload_bytes, ${ms('retention')}, ${ms('dedupe_window')}, created_at, updated_at`
/** The columns of a queue with its flow control, from `queues q LEFT JOIN queue_flow f`. */
const FLOW_COLUMNS = `f.max_in_flight, f.rate_limit, (extract(epoch FROM f.rate_per) * 1000)::float8 AS rate_per_ms,
  f.key_rate_limit, (extract(epoch FROM f.key_rate_per) * 1000)::float8 AS key_rate_per_ms, coalesce(f.paused, false) AS paused`
const queueWithFlow = (s: SchemaName, where = '', lock = '') =>
  `(SELECT q.*, ${FLOW_COLUMNS} FROM ${s.sql}.queues q LEFT JOIN ${s.sql}.queue_flow f ON f.queue = q.name ${where} ${lock}) AS queues`
const WITH_FLOW = `${COLUMNS}, max_in_flight, rate_limit, rate_per_ms, key_rate_limit, key_rate_per_ms, paused`

function values(name: string, q: QueueSettings): unknown[] {
  return [
    name, q.visibility_timeout_ms, q.max_attempts, q.backoff_type, q.backoff_base_ms, q.backoff_max_ms,
    q.backoff_jitter, q.dead_letter, q.max_payload_bytes, q.retention_ms, q.dedupe_window_ms,
  ]
}

/** Inserts a queue unless one of that name exists; returns whether it did. */
export async function insertQueue(db: Executor, s: SchemaName, name: string, q: QueueSettings): Promise<boolean> {
  const { rows } = await db.query<{ name: string }>(
    `INSERT INTO ${s.sql}.queues AS queues (name, visibility_timeout, max_attempts, backoff_type, backoff_base, backoff_max,
       backoff_jitter, dead_letter, max_payload_bytes, retention, dedupe_window)
     VALUES ($1, $2 * interval '1 millisecond', $3, $4, $5 * interval '1 millisecond', $6 * interval '1 millisecond',
       $7, $8, $9, $10 * interval '1 millisecond', $11 * interval '1 millisecond')
     ON CONFLICT (name) DO NOTHING
     RETURNING name`,
    values(name, q),
  )
  return rows.length > 0
}

/** Updates a queue's settings (not its flow limits: {@link setFlowLimits}); returns whether it exists. */
export async function updateQueue(db: Executor, s: SchemaName, name: string, q: QueueSettings): Promise<boolean> {
  const { rows } = await db.query<{ name: string }>(
    `UPDATE ${s.sql}.queues AS queues SET visibility_timeout = $2 * interval '1 millisecond', max_attempts = $3, backoff_type = $4,
       backoff_base = $5 * interval '1 millisecond', backoff_max = $6 * interval '1 millisecond', backoff_jitter = $7,
       dead_letter = $8, max_payload_bytes = $9, retention = $10 * interval '1 millisecond',
       dedupe_window = $11 * interval '1 millisecond', updated_at = now()
     WHERE name = $1
     RETURNING name`,
    values(name, q),
  )
  return rows.length > 0
}

/** Sets a queue's flow limits (NULL: none), in SQL's set_flow_limits, which checks them again. */
export async function setFlowLimits(db: Executor, s: SchemaName, name: string, q: QueueSettings): Promise<void> {
  await db.query(
    `SELECT ${s.sql}.set_flow_limits($1, $2, $3, $4 * interval '1 millisecond', $5, $6 * interval '1 millisecond')`,
    [name, q.max_in_flight, q.rate_limit, q.rate_per_ms, q.key_rate_limit, q.key_rate_per_ms],
  )
}

export async function selectQueue(db: Executor, s: SchemaName, name: string, forUpdate = false): Promise<QueueRow | undefined> {
  const { rows } = await db.query<QueueRow>(
    `SELECT ${WITH_FLOW} FROM ${queueWithFlow(s, 'WHERE q.name = $1', forUpdate ? 'FOR UPDATE OF q' : '')}`,
    [name],
  )
  return rows[0]
}

export async function selectQueues(db: Executor, s: SchemaName): Promise<QueueRow[]> {
  const { rows } = await db.query<QueueRow>(
    `SELECT ${WITH_FLOW} FROM ${queueWithFlow(s)} ORDER BY name`,
  )
  return rows
}

/** Names of other queues that dead-letter into this one. */
export async function selectQueuesDeadLetteringInto(db: Executor, s: SchemaName, name: string): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    `SELECT name FROM ${s.sql}.queues WHERE dead_letter = $1 ORDER BY name`,
    [name],
  )
  return rows.map((row) => row.name)
}

/** Waits for senders in flight to the queue to finish, and holds them off until commit. */
export async function lockQueueAgainstSenders(db: Executor, s: SchemaName, name: string): Promise<void> {
  await db.query(`SELECT pg_advisory_xact_lock(${s.sql}.wake_key($1))`, [name])
}

export async function countMessages(db: Executor, s: SchemaName, name: string): Promise<number> {
  const { rows } = await db.query<{ count: number }>(
    `SELECT count(*)::integer AS count FROM ${s.sql}.messages WHERE queue = $1`,
    [name],
  )
  return rows[0]?.count ?? 0
}

/** Deletes a queue with its messages, archive, group leases and waiters. */
export async function deleteQueue(db: Executor, s: SchemaName, name: string): Promise<void> {
  await db.query(
    `WITH m AS (DELETE FROM ${s.sql}.messages WHERE queue = $1),
          a AS (DELETE FROM ${s.sql}.messages_archive WHERE queue = $1),
          g AS (DELETE FROM ${s.sql}.group_leases WHERE queue = $1),
          w AS (DELETE FROM ${s.sql}.waiters WHERE queue = $1)
     DELETE FROM ${s.sql}.queues WHERE name = $1`,
    [name],
  )
}

/** One row of the queue_stats view. */
export interface QueueStatsRow {
  queue: string
  ready: number
  delayed: number
  in_flight: number
  dead: number
  total: number
  oldest_ready_age_ms: number | null
  max_attempt: number | null
  retained: number
  dead_letter: string | null
  paused: boolean
}

export async function selectQueueStats(db: Executor, s: SchemaName, name: string | null): Promise<QueueStatsRow[]> {
  const { rows } = await db.query<QueueStatsRow>(
    `SELECT queue, ready::integer, delayed::integer, in_flight::integer, dead::integer, total::integer,
       (extract(epoch FROM oldest_ready_age) * 1000)::float8 AS oldest_ready_age_ms, max_attempt, retained::integer, dead_letter, paused
     FROM ${s.sql}.queue_stats WHERE $1::text IS NULL OR queue = $1 ORDER BY queue`,
    [name],
  )
  return rows
}

/** Deletes every message of a queue (waiting, delayed, in flight); returns how many. */
export async function purgeMessages(db: Executor, s: SchemaName, name: string): Promise<number> {
  const { rows } = await db.query<{ purged: number }>(
    `WITH gone AS (DELETE FROM ${s.sql}.messages WHERE queue = $1 RETURNING 1) SELECT count(*)::integer AS purged FROM gone`,
    [name],
  )
  return rows[0]?.purged ?? 0
}
