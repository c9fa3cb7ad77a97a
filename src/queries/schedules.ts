import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'

/** A schedule as stored. */
export interface ScheduleRow {
  name: string
  queue: string
  cron: string
  timezone: string
  payload: unknown
  headers: Record<string, string> | null
  priority: number
  missed: 'skip' | 'latest' | 'all'
  next_fire_at: Date | null
  last_fire_at: Date | null
  created_at: Date
  updated_at: Date
}

/** What the scheduler reads of a due schedule, with the database clock it was read at. */
export interface DueScheduleRow {
  name: string
  cron: string
  timezone: string
  missed: 'skip' | 'latest' | 'all'
  next_fire_at: Date
  now: Date
}

// 'infinity' stands for "fires no more": JavaScript has no Date for it, so it travels as NULL.
const NEXT = `CASE WHEN next_fire_at = 'infinity' THEN NULL ELSE next_fire_at END AS next_fire_at`
const COLUMNS = `name, queue, cron, timezone, payload, headers, priority, missed, ${NEXT}, last_fire_at, created_at, updated_at`

/** The database clock, or `now` when a test injects one. */
export async function selectNow(db: Executor, now: Date | null): Promise<Date> {
  const { rows } = await db.query<{ now: Date }>(`SELECT coalesce($1::timestamptz, now()) AS now`, [now])
  return (rows[0] as { now: Date }).now
}

/**
 * Checks that the queue exists and that the message would be accepted by it (payload size,
 * priority, headers), raising the typed error a send would; writes nothing.
 */
export async function checkScheduledMessage(db: Executor, s: SchemaName, queue: string, payload: string, headers: string | null, priority: number): Promise<void> {
  await db.query(
    `SELECT ${s.sql}.raise_problem(${s.sql}.message_problem(q.max_payload_bytes, $2::jsonb, NULL, 'json', NULL, NULL, $4, NULL, NULL, $3::jsonb), q.name)
     FROM ${s.sql}.require_queue($1) q`,
    [queue, payload, headers, priority],
  )
}

/**
 * Creates or replaces a schedule. A replacement that keeps the expression and the time zone keeps
 * its next tick (an app that declares its schedules at every start loses no missed tick); one that
 * changes either starts from `next` (computed from now by the caller).
 */
export async function upsertSchedule(
  db: Executor,
  s: SchemaName,
  p: { name: string; queue: string; cron: string; timezone: string; payload: string; headers: string | null; priority: number; missed: string; next: Date | null },
): Promise<ScheduleRow> {
  const { rows } = await db.query<ScheduleRow>(
    `INSERT INTO ${s.sql}.schedules AS s (name, queue, cron, timezone, payload, headers, priority, missed, next_fire_at)
     VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8, coalesce($9::timestamptz, 'infinity'))
     ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, cron = excluded.cron, timezone = excluded.timezone,
       payload = excluded.payload, headers = excluded.headers, priority = excluded.priority, missed = excluded.missed,
       next_fire_at = CASE WHEN (s.cron, s.timezone) = (excluded.cron, excluded.timezone) THEN s.next_fire_at ELSE excluded.next_fire_at END,
       updated_at = now()
     RETURNING ${COLUMNS}`,
    [p.name, p.queue, p.cron, p.timezone, p.payload, p.headers, p.priority, p.missed, p.next],
  )
  return rows[0] as ScheduleRow
}

/** Deletes a schedule; returns whether there was one. */
export async function deleteSchedule(db: Executor, s: SchemaName, name: string): Promise<boolean> {
  const { rows } = await db.query(`DELETE FROM ${s.sql}.schedules WHERE name = $1 RETURNING 1`, [name])
  return rows.length > 0
}

/** Every schedule, by name. */
export async function selectSchedules(db: Executor, s: SchemaName): Promise<ScheduleRow[]> {
  const { rows } = await db.query<ScheduleRow>(`SELECT ${COLUMNS} FROM ${s.sql}.schedules ORDER BY name`)
  return rows
}

/**
 * Milliseconds from the database clock (or `now`) to the earliest next tick of any schedule: at
 * most 0 when one is due, null when there is no schedule; `skip` names schedules left out.
 */
export async function selectWaitMs(db: Executor, s: SchemaName, now: Date | null, skip: readonly string[]): Promise<number | null> {
  const { rows } = await db.query<{ wait_ms: number | null }>(
    `SELECT (extract(epoch FROM min(next_fire_at) - coalesce($1::timestamptz, now())) * 1000)::float8 AS wait_ms
     FROM ${s.sql}.schedules WHERE next_fire_at < 'infinity' AND NOT name = ANY ($2::text[])`,
    [now, skip],
  )
  return rows[0]?.wait_ms ?? null
}

/**
 * Locks the most overdue due schedule that no other process holds (FOR UPDATE SKIP LOCKED) and
 * returns it with the clock; inside a transaction. `skip` names schedules this process leaves
 * alone for now (their last fire failed).
 */
export async function lockDueSchedule(db: Executor, s: SchemaName, now: Date | null, skip: readonly string[]): Promise<DueScheduleRow | undefined> {
  const { rows } = await db.query<DueScheduleRow>(
    `SELECT name, cron, timezone, missed, next_fire_at, coalesce($1::timestamptz, now()) AS now
     FROM ${s.sql}.schedules
     WHERE next_fire_at <= coalesce($1::timestamptz, now()) AND NOT name = ANY ($2::text[])
     ORDER BY next_fire_at
     LIMIT 1
     FOR UPDATE SKIP LOCKED`,
    [now, skip],
  )
  return rows[0]
}

/** Fires ticks of a schedule this transaction holds (see fire_schedule in the migrations); returns the ticks fired. */
export async function fireSchedule(db: Executor, s: SchemaName, name: string, fires: readonly Date[], next: Date | null, expected: Date): Promise<{ fire_at: Date; message_id: string }[]> {
  const { rows } = await db.query<{ fire_at: Date; message_id: string }>(
    `SELECT fire_at, message_id::text FROM ${s.sql}.fire_schedule($1, $2::timestamptz[], coalesce($3::timestamptz, 'infinity'), $4)`,
    [name, fires, next, expected],
  )
  return rows
}
