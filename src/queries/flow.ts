import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'

// Pause and resume (migrations/0008_flow_control.sql); the limits are set with the queue's
// settings (queries/queues.ts, setFlowLimits).

/** Pauses a queue: sends are accepted, nothing is claimed. Returns false when it was paused already. */
export async function pauseQueue(db: Executor, s: SchemaName, name: string): Promise<boolean> {
  const { rows } = await db.query<{ changed: boolean }>(`SELECT ${s.sql}.pause_queue($1) AS changed`, [name])
  return rows[0]?.changed ?? false
}

/** Resumes a queue and wakes its idle consumers. Returns false when it was not paused. */
export async function resumeQueue(db: Executor, s: SchemaName, name: string): Promise<boolean> {
  const { rows } = await db.query<{ changed: boolean }>(`SELECT ${s.sql}.resume_queue($1) AS changed`, [name])
  return rows[0]?.changed ?? false
}

/**
 * Milliseconds until the first rate window of these queues has room again (a throttled key, or a
 * queue's own rate), or null when none is full. An idle consumer of a rate-limited queue sleeps
 * that long rather than its whole poll interval: no NOTIFY says that a window has moved on.
 */
export async function windowReopensInMs(db: Executor, s: SchemaName, queues: readonly string[]): Promise<number | null> {
  const { rows } = await db.query<{ ms: number | null }>(
    `SELECT (extract(epoch FROM min(w.free_at) - now()) * 1000)::float8 AS ms
     FROM ${s.sql}.rate_windows w WHERE w.queue = ANY ($1) AND w.free_at > now()`,
    [queues],
  )
  return rows[0]?.ms ?? null
}
