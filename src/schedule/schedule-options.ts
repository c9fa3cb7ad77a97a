import { z } from 'zod'
import type { QueueRef } from '../queue/define-queue.js'
import { messageFields, storableText } from '../queue/send-options.js'
import type { MissedPolicy } from './fire-plan.js'

/** zod schema for the options of `schedule()`; the expression and the time zone are checked by CronSpec. */
export const scheduleOptionsSchema = z.strictObject({
  cron: z.string(),
  timezone: storableText.optional(),
  queue: z.custom<QueueRef<unknown>>((v) => typeof v === 'string' || (typeof v === 'object' && v !== null), 'must be a queue name or a defineQueue() definition'),
  payload: z.unknown().optional(),
  headers: messageFields.headers,
  priority: messageFields.priority,
  missed: z.enum(['skip', 'latest', 'all']).optional(),
})

/**
 * A schedule: which queue gets which message on every tick of a cron expression.
 *
 * @example
 * await postbox.schedule('nightly-report', { cron: '0 3 * * *', timezone: 'Europe/Paris', queue: 'reports', payload: {} })
 */
export interface ScheduleOptions<P = unknown> {
  /**
   * Five fields (`minute hour day-of-month month day-of-week`), six with seconds first
   * (`5 * * * * *` is the fifth second of every minute), or a nickname such as `@daily`; croner's syntax,
   * which also has `L`, `W` and `#`.
   */
  cron: string
  /** The IANA time zone the expression is read in, such as `'Europe/Paris'`. Default `'UTC'`. */
  timezone?: string
  /** The queue each tick sends to; it must exist. A typed queue checks the payload now. */
  queue: QueueRef<P>
  /** The message's payload, any JSON value. Default `{}`. */
  payload?: P
  /** Headers of every message, besides `postbox-schedule` and `postbox-fire-at`, which postbox sets. */
  headers?: Record<string, string>
  /** The messages' priority. Default 0. */
  priority?: number
  /**
   * What happens to ticks that passed while no scheduler ran: `'latest'` (the default) fires the
   * most recent of them once, `'all'` fires each of them, `'skip'` fires none (only ticks a
   * running scheduler reaches on time).
   */
  missed?: MissedPolicy
}

/** A schedule as `listSchedules()` returns it. */
export interface ScheduleInfo {
  name: string
  queue: string
  cron: string
  timezone: string
  payload: unknown
  headers: Record<string, string> | null
  priority: number
  missed: MissedPolicy
  /** The next tick, from the database clock; null when the expression fires no more. */
  nextFireAt: Date | null
  /** The last tick fired, or null before the first. */
  lastFireAt: Date | null
  createdAt: Date
  updatedAt: Date
}
