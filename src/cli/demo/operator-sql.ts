import type pg from 'pg'
import type { SchemaName } from '../../schema-name.js'
import { renderTable } from '../text-table.js'

/** One inspection query: what it answers, and its SQL. */
export interface OperatorQuery {
  readonly title: string
  readonly sql: string
}

/**
 * The queries an operator runs to inspect postbox with plain SQL (the same ones are in
 * docs/sql-cookbook.md): counts per queue, the dead letters and why they died, the topic
 * subscriptions, and what was handled (queues with a retention keep acked messages in `messages_archive`).
 */
export function operatorQueries(schema: SchemaName): OperatorQuery[] {
  const s = schema.name
  return [
    { title: 'per queue: waiting, delayed, in flight, dead', sql: `SELECT * FROM ${s}.queue_stats;` },
    {
      title: 'the dead letters, and why they died',
      sql: `SELECT id, queue, original_queue, original_attempt, dead_at::time(0) AS dead_at,
       split_part(last_error, E'\\n', 1) AS last_error, payload
FROM ${s}.messages WHERE dead_at IS NOT NULL ORDER BY id;`,
    },
    {
      title: 'the subscriptions: which queue gets a copy of which routing keys',
      sql: `SELECT queue, pattern, filter FROM ${s}.bindings ORDER BY queue, pattern;`,
    },
    {
      title: 'what was handled, and how long it waited (from the archive)',
      sql: `SELECT queue, count(*) AS acked, max(attempt) AS max_attempt,
       round(avg(extract(epoch FROM acked_at - enqueued_at)) * 1000) AS avg_ms_to_ack
FROM ${s}.messages_archive GROUP BY queue ORDER BY queue;`,
    },
  ]
}

/**
 * Runs the operator queries and prints each with its output, as psql would show it. Values come
 * back as Postgres prints them (no parsing), so intervals and JSON read as in psql.
 */
export async function printOperatorSql(pool: pg.Pool, schema: SchemaName, say: (line: string) => void): Promise<void> {
  for (const query of operatorQueries(schema)) {
    say('')
    say(`-- ${query.title}`)
    for (const line of query.sql.split('\n')) say(line)
    const result = await pool.query({ text: query.sql, rowMode: 'array', types: { getTypeParser: () => (value: string) => value } })
    for (const line of renderTable(result.fields.map((f) => f.name), result.rows as (string | null)[][])) say(line)
  }
  say('')
  say(`-- after fixing the cause, an operator moves dead letters back to work with: SELECT ${schema.name}.redrive('fraud-check.dead');`)
}
