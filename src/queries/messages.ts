import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'
import type { MessageRow } from './message-row.js'

// One function per statement. Each is a single round trip; the SQL functions they call live in
// migrations/ and hold the logic, so triggers and other languages get the same behaviour.

/** The prepared-statement name of a hot statement, unique per schema. */
const statement = (s: SchemaName, name: string) => `postbox:${s.name}:${name}`

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

/**
 * Sends a batch in one statement. The delays are converted with an explicit ORDER BY: array_agg
 * over unnest keeps input order only by accident of the plan, and a shifted delay would hold the
 * wrong message back.
 */
export async function sendBatch(db: Executor, s: SchemaName, queue: string, ms: readonly OutgoingMessage[]): Promise<SentRow[]> {
  const { rows } = await db.query<SentRow>(
    `SELECT id, duplicate FROM ${s.sql}.send_batch($1, $2::jsonb[], $3::bytea[], $4::text[],
       (SELECT array_agg(d * interval '1 millisecond' ORDER BY i) FROM unnest($5::bigint[]) WITH ORDINALITY AS u(d, i)), $6::timestamptz[], $7::int[],
       $8::text[], $9::text[], $10::jsonb[])`,
    [
      queue,
      ms.map((m) => m.json),
      ms.map((m) => m.body),
      ms.map((m) => m.encoding),
      ms.map((m) => m.delayMs),
      ms.map((m) => m.availableAt),
      ms.map((m) => m.priority),
      ms.map((m) => m.dedupeKey),
      ms.map((m) => m.groupKey),
      ms.map((m) => m.headers),
    ],
    statement(s, 'send_batch'),
  )
  return rows
}

export async function receive(db: Executor, s: SchemaName, queue: string, max: number, visibilityTimeoutMs: number | null): Promise<MessageRow[]> {
  const { rows } = await db.query<MessageRow>(
    `SELECT * FROM ${s.sql}.receive($1, $2, $3 * interval '1 millisecond')`,
    [queue, max, visibilityTimeoutMs],
    statement(s, 'receive'),
  )
  return rows
}

/** Acks deliveries fenced by their leases; returns the ids acked. */
export async function ack(db: Executor, s: SchemaName, ids: readonly string[], leases: readonly string[]): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(`SELECT ack AS id FROM ${s.sql}.ack($1::bigint[], $2::uuid[])`, [ids, leases], statement(s, 'ack'))
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
    [ids, leases, durationMs],
    statement(s, 'extend'),
  )
  return rows.map((row) => row.id)
}

/** Gives deliveries back, visible at once; returns the ids released. */
export async function release(db: Executor, s: SchemaName, ids: readonly string[], leases: readonly string[]): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(`SELECT release AS id FROM ${s.sql}.release($1::bigint[], $2::uuid[])`, [ids, leases], statement(s, 'release'))
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
