import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'

// Bindings and the unrouted count. The SQL functions they call (migrations/0006_topics.sql) hold
// the checks, so SQL callers get the same behaviour.

/** A binding as stored: the filter as JSON (or null). */
export interface BindingRow {
  queue: string
  pattern: string
  filter: Record<string, string | string[]> | null
}

/** Binds a queue to a pattern (filter as JSON text, or null); true when created or its filter changed. */
export async function bind(db: Executor, s: SchemaName, queue: string, pattern: string, filter: string | null): Promise<boolean> {
  const { rows } = await db.query<{ changed: boolean }>(`SELECT ${s.sql}.bind($1, $2, $3::jsonb) AS changed`, [queue, pattern, filter])
  return rows[0]?.changed ?? false
}

/** Removes a binding; true when there was one. */
export async function unbind(db: Executor, s: SchemaName, queue: string, pattern: string): Promise<boolean> {
  const { rows } = await db.query<{ removed: boolean }>(`SELECT ${s.sql}.unbind($1, $2) AS removed`, [queue, pattern])
  return rows[0]?.removed ?? false
}

/** Every binding, or one queue's, by queue then pattern. */
export async function selectBindings(db: Executor, s: SchemaName, queue: string | null): Promise<BindingRow[]> {
  const { rows } = await db.query<BindingRow>(
    `SELECT queue, pattern, filter FROM ${s.sql}.bindings WHERE $1::text IS NULL OR queue = $1
     ORDER BY queue COLLATE "C", pattern COLLATE "C"`,
    [queue],
  )
  return rows
}

/** The queues a routing key with these headers (JSON text, or null) reaches, sorted. */
export async function matchingQueues(db: Executor, s: SchemaName, routingKey: string, headers: string | null): Promise<string[]> {
  const { rows } = await db.query<{ queues: string[] | null }>(`SELECT ${s.sql}.matching_queues($1, $2::jsonb) AS queues`, [routingKey, headers])
  return rows[0]?.queues ?? []
}

/** The unrouted_stats view's one row. */
export interface UnroutedRow {
  count: number
  last_routing_key: string | null
  last_at: Date | null
}

/** Reads the unrouted_stats view (the sum of the unrouted_counts slots). */
export async function selectUnroutedStats(db: Executor, s: SchemaName): Promise<UnroutedRow> {
  const { rows } = await db.query<UnroutedRow>(`SELECT count::float8 AS count, last_routing_key, last_at FROM ${s.sql}.unrouted_stats`)
  return rows[0] ?? { count: 0, last_routing_key: null, last_at: null }
}
