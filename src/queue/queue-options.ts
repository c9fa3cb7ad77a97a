import { z } from 'zod'
import { durationMs, formatDuration, positiveDurationMs } from '../duration.js'
import type { QueueRow, QueueSettings } from '../queries/queues.js'

const backoffSchema = z.strictObject({
  type: z.enum(['fixed', 'exponential']).optional(),
  base: durationMs.optional(),
  max: durationMs.optional(),
  jitter: z.boolean().optional(),
})

const rateSchema = z.strictObject({
  limit: z.number().int().min(1).max(1_000_000_000),
  per: positiveDurationMs,
})

/** zod schema for the options of `createQueue` and `updateQueue`. */
export const queueOptionsSchema = z.strictObject({
  visibilityTimeout: positiveDurationMs.optional(),
  maxAttempts: z.number().int().min(1).max(10_000).optional(),
  backoff: backoffSchema.optional(),
  deadLetter: z.union([z.string(), z.literal(false)]).optional(),
  maxPayloadBytes: z.number().int().min(1).max(64 * 1024 * 1024).optional(),
  retention: z.union([positiveDurationMs, z.literal(false)]).optional(),
  maxInFlight: z.union([z.number().int().min(1).max(1_000_000_000), z.literal(false)]).optional(),
  rateLimit: z.union([rateSchema, z.literal(false)]).optional(),
  keyRateLimit: z.union([rateSchema, z.literal(false)]).optional(),
  dedupeWindow: z.union([positiveDurationMs, z.literal(false)]).optional(),
})

/** A rate limit: at most `limit` claims in any window of length `per`. */
export interface RateLimit {
  /** Claims allowed in any window of length `per`; a positive integer. */
  limit: number
  /** The window's length: milliseconds, or a string such as `'1s'`. */
  per: number | string
}

/** Settings for a queue. Every field has a default; `updateQueue` changes only the fields given. */
export interface QueueOptions {
  /** How long a claimed message stays invisible before it is delivered again. Default `'30s'`. */
  visibilityTimeout?: number | string
  /** Deliveries before a message goes to the dead letter. Default 5. */
  maxAttempts?: number
  /** Delay before a failed message is retried. Default exponential from 1s to 1h with jitter. */
  backoff?: { type?: 'fixed' | 'exponential'; base?: number | string; max?: number | string; jitter?: boolean }
  /** Queue for exhausted messages, created if missing; `false` drops them. Default `'<name>.dead'`. */
  deadLetter?: string | false
  /** Largest payload accepted, in bytes. Default 256 KiB. */
  maxPayloadBytes?: number
  /** Keep acked messages in `messages_archive` this long; `false` (the default) deletes them on ack. */
  retention?: number | string | false
  /**
   * At most this many messages leased at once, across every consumer and process; `false` (the
   * default) for no cap. A crashed consumer's slot comes back when its lease ends.
   */
  maxInFlight?: number | false
  /**
   * At most `limit` claims of the queue's messages in any window of length `per` (a sliding
   * window, not a fixed one); retries count. Messages over the limit wait unclaimed. `false`
   * (the default) for none.
   */
  rateLimit?: RateLimit | false
  /**
   * The same limit per rate key, the `rateKey` given on send (a domain, a customer); messages
   * without a rate key are not limited by it. `false` (the default) for none.
   */
  keyRateLimit?: RateLimit | false
  /**
   * Refuse a dedupe key for this long after its send, acked or not (SQS FIFO's 5 minutes): a send
   * with the key within the window returns the first message's id as a duplicate. `false` (the
   * default) refuses a key only while its message waits or is in flight.
   */
  dedupeWindow?: number | string | false
}

/** A queue's settings as `getQueue` and `listQueues` return them; durations in milliseconds. */
export interface QueueInfo {
  name: string
  visibilityTimeout: number
  maxAttempts: number
  backoff: { type: 'fixed' | 'exponential'; base: number; max: number; jitter: boolean }
  deadLetter: string | false
  maxPayloadBytes: number
  retention: number | false
  /** The cap on messages in flight, or false. */
  maxInFlight: number | false
  /** The queue's rate limit, `per` in milliseconds, or false. */
  rateLimit: { limit: number; per: number } | false
  /** The per-key rate limit, `per` in milliseconds, or false. */
  keyRateLimit: { limit: number; per: number } | false
  /** Whether the queue is paused (`pauseQueue`): nothing is claimed until `resumeQueue`. */
  paused: boolean
  /** How long a dedupe key stays refused after its send, in milliseconds, or false. */
  dedupeWindow: number | false
  createdAt: Date
  updatedAt: Date
}

export const DEFAULT_SETTINGS: QueueSettings = {
  visibility_timeout_ms: 30_000,
  max_attempts: 5,
  backoff_type: 'exponential',
  backoff_base_ms: 1_000,
  backoff_max_ms: 3_600_000,
  backoff_jitter: true,
  dead_letter: null,
  max_payload_bytes: 256 * 1024,
  retention_ms: null,
  max_in_flight: null,
  rate_limit: null,
  rate_per_ms: null,
  key_rate_limit: null,
  key_rate_per_ms: null,
  dedupe_window_ms: null,
}

/** Applies parsed options over existing settings. */
export function mergeSettings(base: QueueSettings, o: z.output<typeof queueOptionsSchema>, deadLetter: string | null): QueueSettings {
  const merged: QueueSettings = {
    visibility_timeout_ms: o.visibilityTimeout ?? base.visibility_timeout_ms,
    max_attempts: o.maxAttempts ?? base.max_attempts,
    backoff_type: o.backoff?.type ?? base.backoff_type,
    backoff_base_ms: o.backoff?.base ?? base.backoff_base_ms,
    backoff_max_ms: o.backoff?.max ?? base.backoff_max_ms,
    backoff_jitter: o.backoff?.jitter ?? base.backoff_jitter,
    dead_letter: deadLetter,
    max_payload_bytes: o.maxPayloadBytes ?? base.max_payload_bytes,
    retention_ms: o.retention === undefined ? base.retention_ms : o.retention === false ? null : o.retention,
    max_in_flight: o.maxInFlight === undefined ? base.max_in_flight : o.maxInFlight === false ? null : o.maxInFlight,
    ...rate('rate', o.rateLimit, base.rate_limit, base.rate_per_ms),
    ...rate('key_rate', o.keyRateLimit, base.key_rate_limit, base.key_rate_per_ms),
    dedupe_window_ms: o.dedupeWindow === undefined ? base.dedupe_window_ms : o.dedupeWindow === false ? null : o.dedupeWindow,
  }
  // A max below the base would be meaningless; the base wins so a change of one stays valid.
  if (merged.backoff_max_ms < merged.backoff_base_ms) merged.backoff_max_ms = merged.backoff_base_ms
  return merged
}

/** A rate option over the current limit and period, as the settings' two columns. */
function rate<P extends 'rate' | 'key_rate'>(
  prefix: P,
  option: { limit: number; per: number } | false | undefined,
  limit: number | null,
  perMs: number | null,
): Record<`${P}_limit` | `${P}_per_ms`, number | null> {
  const [l, p] = option === undefined ? [limit, perMs] : option === false ? [null, null] : [option.limit, option.per]
  return { [`${prefix}_limit`]: l, [`${prefix}_per_ms`]: p } as Record<`${P}_limit` | `${P}_per_ms`, number | null>
}

/** Whether the settings hold a flow limit, or differ in one from `other`. */
export function flowLimitsDiffer(a: QueueSettings, b: QueueSettings): boolean {
  return a.max_in_flight !== b.max_in_flight || a.rate_limit !== b.rate_limit || a.rate_per_ms !== b.rate_per_ms ||
    a.key_rate_limit !== b.key_rate_limit || a.key_rate_per_ms !== b.key_rate_per_ms
}

export function queueInfo(row: QueueRow): QueueInfo {
  return {
    name: row.name,
    visibilityTimeout: row.visibility_timeout_ms,
    maxAttempts: row.max_attempts,
    backoff: { type: row.backoff_type, base: row.backoff_base_ms, max: row.backoff_max_ms, jitter: row.backoff_jitter },
    deadLetter: row.dead_letter ?? false,
    maxPayloadBytes: row.max_payload_bytes,
    retention: row.retention_ms ?? false,
    maxInFlight: row.max_in_flight ?? false,
    rateLimit: row.rate_limit !== null && row.rate_per_ms !== null ? { limit: row.rate_limit, per: row.rate_per_ms } : false,
    keyRateLimit: row.key_rate_limit !== null && row.key_rate_per_ms !== null ? { limit: row.key_rate_limit, per: row.key_rate_per_ms } : false,
    paused: row.paused,
    dedupeWindow: row.dedupe_window_ms ?? false,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  }
}

/** The queue's flow control in a few words: paused, the cap in flight and the rate limits. */
export function flowSummary(q: QueueInfo): string {
  const rate = (r: { limit: number; per: number }) => `${r.limit}/${formatDuration(r.per)}`
  return [
    q.paused ? 'paused' : '',
    q.maxInFlight === false ? '' : `max ${q.maxInFlight} in flight`,
    q.rateLimit === false ? '' : `rate ${rate(q.rateLimit)}`,
    q.keyRateLimit === false ? '' : `${rate(q.keyRateLimit)} per key`,
  ].filter(Boolean).join(', ')
}
