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
 * The rate-window look-up as an SQL expression over the queues in parameter `param`: milliseconds
 * until the first rate window of these queues has room again (a throttled key, or a queue's own
 * rate), or null when none is full. No NOTIFY says that a window has moved on, so an idle consumer
 * of a rate-limited queue sleeps no longer than this. Arming a wait carries it (queries/waiters.ts:
 * an index probe inside a statement that runs anyway); a consumer without a LISTEN connection runs
 * it alone ({@link windowReopensInMs}).
 */
export const windowReopensSql = (s: SchemaName, param: string) =>
  `(SELECT (extract(epoch FROM min(w.free_at) - now()) * 1000)::float8
     FROM ${s.sql}.rate_windows w WHERE w.queue = ANY (${param}) AND w.free_at > now())`

/** The rate-window look-up ({@link windowReopensSql}) as a statement of its own. */
export async function windowReopensInMs(db: Executor, s: SchemaName, queues: readonly string[]): Promise<number | null> {
  const { rows } = await db.query<{ ms: number | null }>(`SELECT ${windowReopensSql(s, '$1')} AS ms`, [queues])
  return rows[0]?.ms ?? null
}
