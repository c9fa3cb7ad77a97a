import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'
import { arrayParam } from './array-param.js'
import type { MessageRow } from './message-row.js'

// One function per statement. Each is a single round trip; the SQL functions they call live in
// migrations/ and hold the logic, so triggers and other languages get the same behaviour.

/** The prepared-statement name of a hot statement, unique per schema. */
export const statement = (s: SchemaName, name: string) => `postbox:${s.name}:${name}`

/** A message as the send statements take it: payload already encoded. */
export interface OutgoingMessage {
  encoding: 'json' | 'text' | 'binary'
  /** JSON text when encoding is json. */
  json: string | null
  body: Buffer | null
  delayMs: number | null
  availableAt: Date | null
  priority: number
  dedupeKey: string | null
  groupKey: string | null
  headers: string | null
}

export interface SentRow {
  id: string
  duplicate: boolean
}

export async function sendMessage(db: Executor, s: SchemaName, queue: string, m: OutgoingMessage): Promise<SentRow> {
  const { rows } = await db.query<SentRow>(
    `SELECT id, duplicate FROM ${s.sql}.send_message($1, $2::jsonb, $3, $4, $5 * interval '1 millisecond', $6, $7, $8, $9, $10::jsonb)`,
    [queue, m.json, m.body, m.encoding, m.delayMs, m.availableAt, m.priority, m.dedupeKey, m.groupKey, m.headers],
    statement(s, 'send'),
  )
  return rows[0] as SentRow
}

/** A column of the batch as an array, or null when every message has the default there. */
function column<T>(ms: readonly OutgoingMessage[], pick: (m: OutgoingMessage) => T, fallback: T): T[] | null {
  let all = true
  const values = ms.map((m) => {
    const value = pick(m)
    if (value !== fallback) all = false
    return value
  })
  return all ? null : values
}

/**
 * The nine per-message array arguments of send_batch and publish_batch (payloads to headers), from
 * the parameters $2 to $12 that {@link batchValues} fills. To keep the encoding per message small,
 * a batch of JSON payloads travels as one JSON array ($2) rather than a jsonb[] literal, which
 * escapes every quote of every payload; a column where every message has the default travels as
 * NULL and is filled in by Postgres. The delays are converted with an explicit ORDER BY: array_agg
 * over unnest keeps input order only by accident of the plan, and a shifted delay would hold the
 * wrong message back.
 */
export const BATCH_ARGUMENTS = `coalesce($3::jsonb[], ARRAY(SELECT e FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS p(e, i) ORDER BY i)),
       coalesce($4::bytea[], array_fill(NULL::bytea, ARRAY[$12::int])),
       coalesce($5::text[], array_fill('json'::text, ARRAY[$12::int])),
       coalesce((SELECT array_agg(d * interval '1 millisecond' ORDER BY i) FROM unnest($6::bigint[]) WITH ORDINALITY AS u(d, i)),
                array_fill(NULL::interval, ARRAY[$12::int])),
       coalesce($7::timestamptz[], array_fill(NULL::timestamptz, ARRAY[$12::int])),
       coalesce($8::int[], array_fill(0, ARRAY[$12::int])),
       coalesce($9::text[], array_fill(NULL::text, ARRAY[$12::int])),
       coalesce($10::text[], array_fill(NULL::text, ARRAY[$12::int])),
       coalesce($11::jsonb[], array_fill(NULL::jsonb, ARRAY[$12::int]))`

/** The values of the parameters $2 to $12 of {@link BATCH_ARGUMENTS}, for these messages. */
export function batchValues(ms: readonly OutgoingMessage[]): unknown[] {
  const allJson = ms.every((m) => m.encoding === 'json')
  return [
    allJson ? `[${ms.map((m) => m.json).join(',')}]` : null,
    allJson ? null : ms.map((m) => m.json),
    column(ms, (m) => m.body, null),
    allJson ? null : ms.map((m) => m.encoding),
    column(ms, (m) => m.delayMs, null),
    column(ms, (m) => m.availableAt, null),
    column(ms, (m) => m.priority, 0),
    column(ms, (m) => m.dedupeKey, null),
    column(ms, (m) => m.groupKey, null),
    column(ms, (m) => m.headers, null),
    ms.length,
  ]
}

/**
 * Sends a batch in one statement (the arguments: {@link BATCH_ARGUMENTS}). The ids come back as one
 * comma-separated text in input order (cheaper to read than a bigint[]), and the duplicate flags
 * only when there is one.
 */
export async function sendBatch(db: Executor, s: SchemaName, queue: string, ms: readonly OutgoingMessage[]): Promise<SentRow[]> {
  const { rows } = await db.query<{ ids: string | null; duplicates: boolean[] | null }>(
    `SELECT string_agg(b.id::text, ',' ORDER BY b.ord) AS ids,
            CASE WHEN bool_or(b.duplicate) THEN array_agg(b.duplicate ORDER BY b.ord) END AS duplicates
     FROM ${s.sql}.send_batch($1, ${BATCH_ARGUMENTS}) WITH ORDINALITY AS b(id, duplicate, ord)`,
    [queue, ...batchValues(ms)],
    statement(s, 'send_batch'),
  )
  const ids = rows[0]?.ids?.split(',') ?? []
  const duplicates = rows[0]?.duplicates
  return ids.map((id, i) => ({ id, duplicate: duplicates?.[i] ?? false }))
}

/**
 * What the claim function returns per message (migrations/0007): the columns a delivery needs,
 * times as whole epoch milliseconds. The queue is not among them: the caller named it.
 */
const CLAIM_COLUMNS = [
  'id', 'priority', 'attempt', 'lease', 'encoding', 'payload', 'body', 'headers', 'dedupe_key', 'group_key', 'last_error', 'routing_key',
  'enqueued_ms', 'claimed_ms', 'available_ms',
]
/** The same columns as NULLs, for the ack row of `ackAndReceive`. */
const NULL_CLAIM_COLUMNS = CLAIM_COLUMNS.map((c) => `NULL AS ${c}`).join(', ')

/** Claims up to `max` messages of `queue` under a lease (the `claim` SQL function). */
export async function receive(db: Executor, s: SchemaName, queue: string, max: number, visibilityTimeoutMs: number | null): Promise<MessageRow[]> {
  const { rows } = await db.query<MessageRow>(
    `SELECT $1::text AS queue, c.* FROM ${s.sql}.claim($1, $2, $3 * interval '1 millisecond') c`,
    [queue, max, visibilityTimeoutMs],
    statement(s, 'claim'),
  )
  return rows
}

/**
 * Acks deliveries and claims more in one statement, so that a busy worker's acks travel with
 * its next claim instead of costing a round trip of their own. The first row carries the ids
 * acked (the ack runs first: UNION ALL reads its branches in order); the others are the claimed
 * messages. Either both happen or, when the statement fails, neither.
 */
export async function ackAndReceive(
  db: Executor,
  s: SchemaName,
  acks: { ids: readonly string[]; leases: readonly string[] },
  queue: string,
  max: number,
  visibilityTimeoutMs: number | null,
): Promise<{ acked: string[]; rows: MessageRow[] }> {
  const { rows } = await db.query<MessageRow & { acked: string[] | null }>(
    `SELECT coalesce(array_agg(a.id), '{}') AS acked, NULL AS queue, ${NULL_CLAIM_COLUMNS}
       FROM ${s.sql}.ack($4::bigint[], $5::uuid[]) AS a(id)
     UNION ALL
     SELECT NULL, $1::text, c.* FROM ${s.sql}.claim($1, $2, $3 * interval '1 millisecond') c`,
    [queue, max, visibilityTimeoutMs, arrayParam(acks.ids), arrayParam(acks.leases)],
    statement(s, 'ack_and_claim'),
  )
  const [first, ...claimed] = rows
  return { acked: first?.acked ?? [], rows: claimed }
}

/** Acks deliveries fenced by their leases; returns the ids acked. */
export async function ack(db: Executor, s: SchemaName, ids: readonly string[], leases: readonly string[]): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(`SELECT ack AS id FROM ${s.sql}.ack($1::bigint[], $2::uuid[])`, [arrayParam(ids), arrayParam(leases)], statement(s, 'ack'))
  return rows.map((row) => row.id)
}

export type NackOutcome = 'retried' | 'dead' | 'dropped' | null

export async function nack(
  db: Executor,
  s: SchemaName,
  p: { id: string; lease: string; delayMs: number | null; error: string | null; dead: boolean },
): Promise<NackOutcome> {
  const { rows } = await db.query<{ outcome: NackOutcome }>(
    `SELECT ${s.sql}.nack($1, $2, $3 * interval '1 millisecond', $4, $5) AS outcome`,
    [p.id, p.lease, p.delayMs, p.error, p.dead],
    statement(s, 'nack'),
  )
  return rows[0]?.outcome ?? null
}

/** Extends leases to now + duration; returns the ids whose lease is still held. */
export async function extend(db: Executor, s: SchemaName, ids: readonly string[], leases: readonly string[], durationMs: number): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT extend AS id FROM ${s.sql}.extend($1::bigint[], $2::uuid[], $3 * interval '1 millisecond')`,
    [arrayParam(ids), arrayParam(leases), durationMs],
    statement(s, 'extend'),
  )
  return rows.map((row) => row.id)
}

/** Gives deliveries back, visible at once; returns the ids released. */
export async function release(db: Executor, s: SchemaName, ids: readonly string[], leases: readonly string[]): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(`SELECT release AS id FROM ${s.sql}.release($1::bigint[], $2::uuid[])`, [arrayParam(ids), arrayParam(leases)], statement(s, 'release'))
  return rows.map((row) => row.id)
}

export async function redrive(db: Executor, s: SchemaName, deadQueue: string, to: string | null, max: number | null): Promise<number> {
  const { rows } = await db.query<{ moved: number }>(`SELECT ${s.sql}.redrive($1, $2, $3) AS moved`, [deadQueue, to, max])
  return rows[0]?.moved ?? 0
}

export async function pruneArchive(db: Executor, s: SchemaName): Promise<number> {
  const { rows } = await db.query<{ pruned: number }>(`SELECT ${s.sql}.prune_archive() AS pruned`)
  return rows[0]?.pruned ?? 0
}
