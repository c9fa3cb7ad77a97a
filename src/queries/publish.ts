import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'
import { BATCH_ARGUMENTS, batchValues, statement, type OutgoingMessage } from './messages.js'

/** What a publish statement returns, per message: the queues reached and the ids there, in step. */
export interface PublishedRow {
  queues: string[]
  ids: string[]
  /** The queues where the dedupe key found a waiting message (its id is in ids). */
  duplicates: string[]
}

const split = (text: string | null | undefined) => (text ? text.split(',') : [])

/**
 * Publishes one message in one statement (publish_message routes it, locks the queues and writes
 * a copy to each). Queue names hold no comma, so the queues and ids come back as comma-separated
 * text, cheaper to read than arrays.
 */
export async function publish(db: Executor, s: SchemaName, routingKey: string, m: OutgoingMessage, unrouted: string): Promise<PublishedRow> {
  const { rows } = await db.query<{ queues: string | null; ids: string | null; duplicates: string[] | null }>(
    `SELECT string_agg(p.queue, ',' ORDER BY p.ord) AS queues, string_agg(p.id::text, ',' ORDER BY p.ord) AS ids,
            array_agg(p.queue ORDER BY p.ord) FILTER (WHERE p.duplicate) AS duplicates
     FROM ${s.sql}.publish_message($1, $2::jsonb, $3, $4, $5 * interval '1 millisecond', $6, $7, $8, $9, $10::jsonb, $11)
          WITH ORDINALITY AS p(queue, id, duplicate, ord)`,
    [routingKey, m.json, m.body, m.encoding, m.delayMs, m.availableAt, m.priority, m.dedupeKey, m.groupKey, m.headers, unrouted],
    statement(s, 'publish'),
  )
  return { queues: split(rows[0]?.queues), ids: split(rows[0]?.ids), duplicates: rows[0]?.duplicates ?? [] }
}

/** Publishes many messages in one statement; returns, per message in input order, what it reached. */
export async function publishBatch(
  db: Executor,
  s: SchemaName,
  routingKeys: readonly string[],
  ms: readonly OutgoingMessage[],
  unrouted: string,
): Promise<PublishedRow[]> {
  const { rows } = await db.query<{ positions: string | null; queues: string | null; ids: string | null; duplicates: boolean[] | null }>(
    `SELECT string_agg(p.batch_position::text, ',' ORDER BY p.ord) AS positions, string_agg(p.queue, ',' ORDER BY p.ord) AS queues,
            string_agg(p.id::text, ',' ORDER BY p.ord) AS ids,
            CASE WHEN bool_or(p.duplicate) THEN array_agg(p.duplicate ORDER BY p.ord) END AS duplicates
     FROM ${s.sql}.publish_batch($1::text[], ${BATCH_ARGUMENTS}, $13) WITH ORDINALITY AS p(batch_position, queue, id, duplicate, ord)`,
    [routingKeys, ...batchValues(ms), unrouted],
    statement(s, 'publish_batch'),
  )
  const results = ms.map((): PublishedRow => ({ queues: [], ids: [], duplicates: [] }))
  const positions = split(rows[0]?.positions)
  const queues = split(rows[0]?.queues)
  const ids = split(rows[0]?.ids)
  const duplicates = rows[0]?.duplicates
  positions.forEach((position, i) => {
    const result = results[Number(position) - 1] as PublishedRow
    const queue = queues[i] as string
    result.queues.push(queue)
    result.ids.push(ids[i] as string)
    if (duplicates?.[i]) result.duplicates.push(queue)
  })
  return results
}
