import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'
import { statement } from './messages.js'

// Streams: administration, appends, stamp rounds and reads. The logic lives in the SQL functions
// of migrations/0010_streams.sql; each function here is one statement.

/** A row of the `streams` table, as the admin statements return it. */
export interface StreamRow {
  name: string
  partitions: number
  retention_ms: number
  created_at: Date
}

const STREAM_COLUMNS = `name, partitions, (extract(epoch FROM retention) * 1000)::bigint::float8 AS retention_ms, created_at`

/** Creates a stream (or returns the existing one unchanged). */
export async function createStream(db: Executor, s: SchemaName, name: string, partitions: number, retentionMs: number): Promise<StreamRow> {
  const { rows } = await db.query<StreamRow>(
    `SELECT ${STREAM_COLUMNS} FROM ${s.sql}.create_stream($1, $2, $3 * interval '1 millisecond')`,
    [name, partitions, retentionMs],
  )
  return rows[0] as StreamRow
}

/** One stream, or none. */
export async function selectStream(db: Executor, s: SchemaName, name: string): Promise<StreamRow | undefined> {
  const { rows } = await db.query<StreamRow>(`SELECT ${STREAM_COLUMNS} FROM ${s.sql}.streams WHERE name = $1`, [name])
  return rows[0]
}

/** Every stream, by name. */
export async function selectStreams(db: Executor, s: SchemaName): Promise<StreamRow[]> {
  return (await db.query<StreamRow>(`SELECT ${STREAM_COLUMNS} FROM ${s.sql}.streams ORDER BY name`)).rows
}

/** Deletes a stream with its log, groups and offsets; false when there was none. */
export async function deleteStream(db: Executor, s: SchemaName, name: string): Promise<boolean> {
  const { rows } = await db.query<{ deleted: boolean }>(`SELECT ${s.sql}.delete_stream($1) AS deleted`, [name])
  return rows[0]?.deleted ?? false
}

/** An event as the append statements take it: payload already encoded. */
export interface OutgoingEvent {
  encoding: 'json' | 'text' | 'binary'
  json: string | null
  body: Buffer | null
  key: string | null
  headers: string | null
}

/** What an append returns per event. */
export interface AppendedRow {
  id: string
  partition: number
}

/** Appends one event in one statement. */
export async function appendEvent(db: Executor, s: SchemaName, stream: string, e: OutgoingEvent): Promise<AppendedRow> {
  const { rows } = await db.query<AppendedRow>(
    `SELECT id::text, partition FROM ${s.sql}.append_events($1, ARRAY[$2::text], ARRAY[$3::jsonb], ARRAY[$4::bytea], ARRAY[$5::text], ARRAY[$6::jsonb])`,
    [stream, e.encoding, e.json, e.body, e.key, e.headers],
    statement(s, 'append'),
  )
  return rows[0] as AppendedRow
}

/**
 * Appends many events in one statement; returns them in input order. As in send_batch, a batch
 * of JSON payloads travels as one JSON array rather than a jsonb[] literal that escapes every
 * quote, and a column without values travels as NULL.
 */
export async function appendEvents(db: Executor, s: SchemaName, stream: string, es: readonly OutgoingEvent[]): Promise<AppendedRow[]> {
  const allJson = es.every((e) => e.encoding === 'json')
  const anyKey = es.some((e) => e.key !== null)
  const anyHeaders = es.some((e) => e.headers !== null)
  const { rows } = await db.query<AppendedRow>(
    `SELECT a.id::text AS id, a.partition FROM ${s.sql}.append_events($1,
       coalesce($2::text[], array_fill('json'::text, ARRAY[$8::int])),
       coalesce($3::jsonb[], ARRAY(SELECT e FROM jsonb_array_elements($4::jsonb) WITH ORDINALITY AS p(e, i) ORDER BY i)),
       coalesce($5::bytea[], array_fill(NULL::bytea, ARRAY[$8::int])),
       coalesce($6::text[], array_fill(NULL::text, ARRAY[$8::int])),
       coalesce($7::jsonb[], array_fill(NULL::jsonb, ARRAY[$8::int]))) a
     ORDER BY a.id`,
    [
      stream,
      allJson ? null : es.map((e) => e.encoding),
      allJson ? null : es.map((e) => e.json),
      allJson ? `[${es.map((e) => e.json).join(',')}]` : null,
      allJson ? null : es.map((e) => e.body),
      anyKey ? es.map((e) => e.key) : null,
      anyHeaders ? es.map((e) => e.headers) : null,
      es.length,
    ],
    statement(s, 'append_batch'),
  )
  return rows
}

/**
 * One stamp round (see stamp_stream): the number of events it gave offsets, or null when another
 * round held the stream. Run alone, not inside another transaction: its lock is held to commit.
 */
export async function stampStream(db: Executor, s: SchemaName, stream: string): Promise<number | null> {
  const { rows } = await db.query<{ stamped: number | null }>(`SELECT ${s.sql}.stamp_stream($1) AS stamped`, [stream], statement(s, 'stamp'))
  return rows[0]?.stamped ?? null
}

/**
 * Waits until no stamp round holds the stream (another reader's round ends with its transaction)
 * by taking and, as this statement commits, releasing the round's lock: the key stamp_stream's
 * try-lock uses (migrations/0010_streams.sql).
 */
export async function awaitStampRound(db: Executor, s: SchemaName, stream: string): Promise<void> {
  await db.query(
    `SELECT pg_advisory_xact_lock(hashtextextended('postbox.stamp:' || $1 || ':' || x.id, 0)) FROM ${s.sql}.streams x WHERE x.name = $2`,
    [s.name, stream],
  )
}

/** An event of the log as the read statements return it. */
export interface EventRow {
  partition: number
  offset: string
  id: string
  key: string | null
  encoding: 'json' | 'text' | 'binary'
  payload: unknown
  body: Buffer | null
  headers: Record<string, string> | null
  appended_at: Date
  stamped_at: Date
}

const EVENT_COLUMNS = `e.partition, e."offset"::text AS "offset", e.id::text AS id, e.key, e.encoding, e.payload, e.body, e.headers, e.appended_at, e.stamped_at`

/** Events of one partition after an offset, in offset order (readStream). */
export async function selectEvents(db: Executor, s: SchemaName, stream: string, partition: number, after: string, limit: number): Promise<EventRow[]> {
  const { rows } = await db.query<EventRow>(
    `SELECT ${EVENT_COLUMNS}
     FROM ${s.sql}.require_stream($1) st
     JOIN ${s.sql}.stream_events e ON e.stream_id = st.id AND e.partition = $2 AND e."offset" > $3::bigint
     ORDER BY e."offset" LIMIT $4`,
    [stream, partition, after, limit],
  )
  return rows
}

/**
 * A stamp round, then the next events of several partitions at once, each after its own offset
 * and at most `limit` per partition, in one statement (what a group member runs each time it looks
 * for events; stamp_and_read in migrations/0013_stream_stamp_and_read.sql). Run alone, not inside
 * another transaction: the round's lock is held to commit.
 */
export async function stampAndRead(
  db: Executor,
  s: SchemaName,
  stream: string,
  partitions: readonly number[],
  after: readonly string[],
  limit: number,
): Promise<EventRow[]> {
  const { rows } = await db.query<EventRow>(
    `SELECT ${EVENT_COLUMNS} FROM ${s.sql}.stamp_and_read($1, $2::int[], $3::bigint[], $4) e`,
    [stream, partitions, after, limit],
    statement(s, 'stamp_read'),
  )
  return rows
}
