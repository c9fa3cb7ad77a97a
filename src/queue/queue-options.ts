import { z } from 'zod'
import { durationMs, positiveDurationMs } from '../duration.js'
import type { QueueRow, QueueSettings } from '../queries/queues.js'

const backoffSchema = z.strictObject({
  type: z.enum(['fixed', 'exponential']).optional(),
  base: durationMs.optional(),
  max: durationMs.optional(),
  jitter: z.boolean().optional(),
})

/** zod schema for the options of `createQueue` and `updateQueue`. */
export const queueOptionsSchema = z.strictObject({
  visibilityTimeout: positiveDurationMs.optional(),
  maxAttempts: z.number().int().min(1).max(10_000).optional(),
  backoff: backoffSchema.optional(),
  deadLetter: z.union([z.string(), z.literal(false)]).optional(),
  maxPayloadBytes: z.number().int().min(1).max(64 * 1024 * 1024).optional(),
  retention: z.union([positiveDurationMs, z.literal(false)]).optional(),
  dedupeWindow: z.union([positiveDurationMs, z.literal(false)]).optional(),
})

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
    dedupe_window_ms: o.dedupeWindow === undefined ? base.dedupe_window_ms : o.dedupeWindow === false ? null : o.dedupeWindow,
  }
  // A max below the base would be meaningless; the base wins so a change of one stays valid.
  if (merged.backoff_max_ms < merged.backoff_base_ms) merged.backoff_max_ms = merged.backoff_base_ms
  return merged
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
    dedupeWindow: row.dedupe_window_ms ?? false,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  }
}
