import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'

// Pause and resume (migrations/0007_flow_control.sql); the limits are set with the queue's
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
