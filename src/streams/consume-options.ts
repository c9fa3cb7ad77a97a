import { z } from 'zod'
import { positiveDurationMs } from '../duration.js'
import type { PgClient } from '../db/pg-client.js'
import type { StreamEvent } from './stream-event.js'

/** Options of `consume()`. */
export interface ConsumeOptions {
  /**
   * Where a new group starts: `'earliest'` (the default: every retained event) or `'latest'`
   * (events that become visible after the group is created). A group that exists continues at
   * its committed offsets; move it with `seek`.
   */
  from?: 'earliest' | 'latest'
  /**
   * Run each batch of a partition in a transaction (`ctx.tx`) that also commits the group's
   * offset: the handler's writes and the offset commit together or not at all (exactly-once
   * effects in this database). Default false: the offset is committed after the batch, so after
   * a crash at most the uncommitted batch is delivered again.
   */
  transactional?: boolean
  /**
   * Partitions whose batches run at once, each in offset order; default 4. In transactional mode
   * each holds a pool connection while it runs, so keep it at least 2 below the pool's size
   * (heartbeats and reads need connections too).
   */
  concurrency?: number
  /** Events read per partition per round, and committed with one offset write; default 100. */
  batchSize?: number
  /** A member that has not heartbeat for this long is dead and its partitions move; default 10s. */
  sessionTimeout?: number | string
  /** How often a member heartbeats and rebalances; default a third of the session timeout. */
  heartbeatInterval?: number | string
  /** How often an idle member looks for events when no notification comes; default the Postbox's pollInterval. */
  pollInterval?: number | string
  /** After a handler error, the partition waits this long, doubling up to a minute, then retries the event; default 1s. */
  retryDelay?: number | string
  /** This member's id in the group (static membership); default a random UUID. */
  memberId?: string
}

export const consumeOptionsSchema = z.strictObject({
  from: z.enum(['earliest', 'latest']).optional(),
  transactional: z.boolean().optional(),
  concurrency: z.number().int().min(1).max(256).optional(),
  batchSize: z.number().int().min(1).max(10_000).optional(),
  sessionTimeout: positiveDurationMs.optional(),
  heartbeatInterval: positiveDurationMs.optional(),
  pollInterval: positiveDurationMs.optional(),
  retryDelay: positiveDurationMs.optional(),
  memberId: z.string().min(1).max(200).optional(),
})

/** Consume options after validation, with defaults; durations in milliseconds. */
export interface ConsumeSettings {
  from: 'earliest' | 'latest'
  transactional: boolean
  concurrency: number
  batchSize: number
  sessionTimeoutMs: number
  heartbeatMs: number
  pollMs: number
  retryDelayMs: number
  memberId: string
}

/**
 * What a stream handler gets besides the event: `signal` aborts when the consumer stops for good
 * or loses the partition; `tx` is the batch's transaction in transactional mode (a pg client in
 * `BEGIN`, or a Kysely `Transaction`), undefined otherwise.
 */
export interface StreamContext<Tx = PgClient> {
  readonly signal: AbortSignal
  readonly tx: Tx | undefined
  readonly group: string
  readonly member: string
}

/** A stream handler: resolve to go on, throw to retry the event after `retryDelay` (the partition waits). */
export type StreamHandler<P = unknown, Tx = PgClient> = (event: StreamEvent<P>, ctx: StreamContext<Tx>) => unknown
