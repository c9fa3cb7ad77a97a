import { z } from 'zod'
import { ownRecord } from '../validation.js'
import type { TransactionLike } from '../db/transaction.js'
import { durationMs } from '../duration.js'

// Postgres text cannot hold U+0000: refuse it here as a bad option rather than fail in the driver.
const noNul = (v: string) => !v.includes('\u0000')
const NUL = 'must not contain U+0000'
const WELL_FORMED = 'must be well-formed UTF-16 (it has a lone surrogate, which has no UTF-8 form)'
/** Text Postgres can store exactly: no U+0000, no lone surrogate (pg would turn it into U+FFFD). */
export const storableText = z.string().refine(noNul, NUL).refine((v) => v.isWellFormed(), WELL_FORMED)
const key = storableText.min(1).max(512)
/** The header that carries a message's rate key (send's `rateKey`), read by the claim's rate limit. */
export const RATE_KEY_HEADER = 'postbox-rate-key'
const rateKey = storableText.min(1).refine((v) => Buffer.byteLength(v) <= 512, 'must be at most 512 bytes (UTF-8)')

/** zod fields of the per-message options, shared by `send`, `sendBatch` items and `publish`. */
export const messageFields = {
    delay: durationMs.optional(),
    availableAt: z.date().refine((d) => !Number.isNaN(d.getTime()), 'must be a valid date').optional(),
    priority: z.number().int().min(-1_000_000).max(1_000_000).optional(),
    dedupeKey: key.optional(),
    groupKey: key.optional(),
    rateKey: rateKey.optional(),
    headers: ownRecord(storableText, storableText).optional(),
}

/** The refinement every schema with {@link messageFields} carries: a message has one start. */
export const oneStart = (o: { delay?: number; availableAt?: Date }) => o.delay === undefined || o.availableAt === undefined
/** The message of {@link oneStart}. */
export const ONE_START = 'give delay or availableAt, not both'

/** zod schema for the per-message options of `send` and `sendBatch` items. */
export const messageOptionsSchema = z.strictObject(messageFields).refine(oneStart, ONE_START)

/** zod schema of a `tx` option: a pg client or a Kysely transaction. */
export const txSchema = z.custom<TransactionLike>((v) => typeof v === 'object' && v !== null, 'must be a pg client or a Kysely transaction')

/** zod schema for the options of `send`. */
export const sendOptionsSchema = z.strictObject({ ...messageFields, tx: txSchema.optional() }).refine(oneStart, ONE_START)

/** zod schema for the options of `sendBatch`. */
export const batchOptionsSchema = z.strictObject({ tx: txSchema.optional() })

/** Per-message options: when it becomes available, its priority, keys and headers. */
export interface MessageOptions {
  /** Deliver no earlier than this long from now (database time). */
  delay?: number | string
  /** Deliver no earlier than this moment. */
  availableAt?: Date
  /** Higher first; default 0. */
  priority?: number
  /** While a message with this key waits or is in flight, sending another returns the first. */
  dedupeKey?: string
  /**
   * Messages of one group are delivered one at a time, across every consumer: a message waits
   * while another of its group is in flight or waiting for a retry, and while an older one is
   * waiting. The order is by id among messages committed when the claim runs; one whose
   * transaction commits after younger ones of its group were claimed goes after them.
   */
  groupKey?: string
  /**
   * The key the queue's `keyRateLimit` counts this message under (a domain, a customer): 1 to 512
   * bytes. Sent as the header `postbox-rate-key`, which SQL senders set themselves.
   */
  rateKey?: string
  /** String metadata, for example `traceparent`. */
  headers?: Record<string, string>
}

/** Options of `send`: the message's options, and the caller's transaction to send in. */
export interface SendOptions extends MessageOptions {
  /** A pg client inside `BEGIN`, or a Kysely transaction: the message exists iff it commits. */
  tx?: TransactionLike
}
