import { z } from 'zod'
import { durationMs, positiveDurationMs } from '../duration.js'
import { parseOptions } from '../validation.js'

/** Options of `work()`. */
export interface WorkerOptions {
  /** Handlers running at once; default 1. In transactional mode, see `transactional` for the pool it needs. */
  concurrency?: number
  /**
   * Run each handler in a transaction with the ack: `ctx.tx` is that transaction. Default false.
   *
   * Each running handler then holds a pool connection from its start to its commit, and 2 more
   * must stay free for claims and lease renewals: the `concurrency` of all transactional workers
   * of one Postbox, plus 2, must fit in the pool (`poolSize`, default 10, or your pg Pool's
   * `max`). Otherwise `work()` throws `InvalidOptionsError` saying how large a pool it needs:
   * handlers holding every connection would leave claims waiting and leases unrenewed, and a
   * handler that needs one more connection (a `send` without `tx`) would wait for good. Given a
   * Kysely instance, postbox cannot see its pool's size: make it `concurrency` plus 2 yourself.
   */
  transactional?: boolean
  /** Lease per delivery; default the queue's visibility timeout. Leases are extended while a handler runs. */
  visibilityTimeout?: number | string
  /** Abort `ctx.signal` and retry the message when a handler runs longer than this. Default: no limit. */
  handlerTimeout?: number | string
  /** How often to look for work when no notification comes; default the Postbox's pollInterval. */
  pollInterval?: number | string
  /** Acks are flushed in one statement at most this long after a handler finishes; default 2ms. */
  ackDelay?: number | string
  /**
   * After a claim that emptied the queue but found something, wait this long before claiming
   * again, so that a steady trickle is claimed in batches rather than a message or two per
   * statement; default 3ms, 0 claims again at once. An idle worker is woken at once regardless.
   */
  claimLinger?: number | string
  /**
   * Messages claimed ahead of free handlers (their leases kept while they wait), so claims come in
   * batches. Default: about 50 ms of work at the worker's current rate (1 for slow handlers, up to
   * 1000 for fast ones), doubled by each claim that comes back full while a backlog lasts, up to
   * 1000 and at most a second of work. 0 claims only for free handlers.
   */
  prefetch?: number
}

export const workerOptionsSchema = z.strictObject({
  concurrency: z.number().int().min(1).max(10_000).optional(),
  transactional: z.boolean().optional(),
  visibilityTimeout: positiveDurationMs.optional(),
  handlerTimeout: positiveDurationMs.optional(),
  pollInterval: positiveDurationMs.optional(),
  ackDelay: durationMs.optional(),
  claimLinger: durationMs.optional(),
  prefetch: z.number().int().min(0).max(1000).optional(),
})

/** Worker options after validation, with their defaults filled in; durations in milliseconds. */
export interface WorkerSettings {
  concurrency: number
  transactional: boolean
  visibilityTimeoutMs: number | null
  handlerTimeoutMs: number | null
  pollMs: number
  ackDelayMs: number
  /**
   * Pause after a claim that emptied the queue. Measured (bench, 10 senders, a worker consuming):
   * claiming again at once made a claim per few messages; 3 ms cut Postgres CPU per message by
   * about a fifth and raised the senders' rate from 0.65x to 0.8x of the bare INSERT loop.
   */
  claimLingerMs: number
  /** Messages claimed ahead of free handlers, so claims come in batches; null sizes it by throughput. */
  prefetch: number | null
}

/** Validates `work()`'s options (throws `InvalidOptionsError`) and fills in the defaults. */
export function workerSettings(options: WorkerOptions | undefined, defaultPollMs: number): WorkerSettings {
  const o = parseOptions(workerOptionsSchema, options, 'worker options')
  return {
    concurrency: o.concurrency ?? 1,
    transactional: o.transactional ?? false,
    visibilityTimeoutMs: o.visibilityTimeout ?? null,
    handlerTimeoutMs: o.handlerTimeout ?? null,
    pollMs: o.pollInterval ?? defaultPollMs,
    ackDelayMs: o.ackDelay ?? 2,
    claimLingerMs: o.claimLinger ?? 3,
    prefetch: o.prefetch ?? null,
  }
}

/** Options of `worker.stop()`. */
export interface StopOptions {
  /** How long to wait for running handlers before releasing their messages; default 30s. */
  timeout?: number | string
}

export const stopOptionsSchema = z.strictObject({ timeout: durationMs.optional() })
