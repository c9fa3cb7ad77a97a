import type pg from 'pg'
import type { Postbox } from '../../postbox.js'
import type { Worker } from '../../worker/worker.js'
import type { SchemaName } from '../../schema-name.js'
import type { Counts, Tally } from './tally.js'

/**
 * What a demo scenario runs against: the Postbox, the app's own pool and schema (for business
 * tables such as users and orders, kept apart from postbox's schema), where progress lines go,
 * and the signal that Ctrl-C aborts.
 */
export interface DemoContext {
  readonly postbox: Postbox
  /** The app's pool, for its business tables and transactions. */
  readonly pool: pg.Pool
  /** The schema of the app's business tables (created by the scenarios, dropped by the caller). */
  readonly app: SchemaName
  /** Writes one line of live progress. */
  readonly say: (line: string) => void
  /** Aborted on Ctrl-C: scenarios stop waiting and stop their workers. */
  readonly signal: AbortSignal
}

/** What one scenario did, counted from worker events and from the database. */
export interface ScenarioResult {
  readonly scenario: string
  /** Messages that exist because a transaction committed (counted in the database). */
  readonly sent: number
  /** Deliveries that completed (worker `completed` events). */
  readonly handled: number
  /** Failures that were scheduled for another attempt (worker `retried` events). */
  readonly retried: number
  /** Messages moved to a dead-letter queue (worker `deadLettered` events). */
  readonly deadLettered: number
  /** One line on what it showed, with measured numbers. */
  readonly note: string
  /** The same counts per queue. */
  readonly byQueue: Readonly<Record<string, Counts>>
}

/**
 * Counts the messages ever sent to `queues`: waiting, in flight or dead (dead letters keep their
 * `original_queue`), plus the acked ones the queues' retention keeps in `messages_archive`. A
 * message whose transaction rolled back was never written, so it is not counted.
 */
export async function countSent(ctx: DemoContext, queues: readonly string[]): Promise<number> {
  const s = ctx.postbox.schema.sql
  const { rows } = await ctx.pool.query<{ sent: string }>(
    `SELECT (SELECT count(*) FROM ${s}.messages WHERE queue = ANY ($1) OR original_queue = ANY ($1))
          + (SELECT count(*) FROM ${s}.messages_archive WHERE queue = ANY ($1)) AS sent`,
    [queues],
  )
  return Number(rows[0]?.sent ?? 0)
}

/** Assembles a scenario's result from its tally and the database. */
export async function scenarioResult(ctx: DemoContext, scenario: string, queues: readonly string[], tally: Tally, note: string): Promise<ScenarioResult> {
  const total = tally.total()
  return {
    scenario,
    sent: await countSent(ctx, queues),
    handled: total.completed,
    retried: total.retried,
    deadLettered: total.deadLettered,
    note,
    byQueue: Object.fromEntries(tally.byQueue),
  }
}

/**
 * How long stopping gives running handlers to finish. The demo's handlers take at most 300 ms,
 * and `worker.stop()` keeps a timer of this length pending even when nothing is running, which
 * holds the process open that long after the demo is done, so it is kept short.
 */
const STOP_TIMEOUT = '1s'

/** Stops a scenario's workers gracefully (on success and on Ctrl-C alike). */
export async function stopWorkers(workers: readonly Pick<Worker, 'stop'>[]): Promise<void> {
  await Promise.all(workers.map((worker) => worker.stop({ timeout: STOP_TIMEOUT })))
}
