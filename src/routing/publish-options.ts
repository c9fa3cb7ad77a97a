import { z } from 'zod'
import type { TransactionLike } from '../db/transaction.js'
import { messageFields, ONE_START, oneStart, txSchema, type MessageOptions } from '../queue/send-options.js'

/**
 * What a publish that reaches no queue does: `'count'` (the default) delivers nothing and adds it
 * to the unrouted count (`unroutedStats()`, the `unrouted_stats` view); `'error'` throws
 * `UnroutableError` and writes nothing.
 */
export type Unrouted = 'count' | 'error'

const unroutedSchema = z.enum(['count', 'error'])

/** zod schema for the options of `publish`. */
export const publishOptionsSchema = z
  .strictObject({ ...messageFields, tx: txSchema.optional(), unrouted: unroutedSchema.optional() })
  .refine(oneStart, ONE_START)

/** zod schema for the options of `publishBatch`. */
export const publishBatchOptionsSchema = z.strictObject({ tx: txSchema.optional(), unrouted: unroutedSchema.optional() })

/** zod schema for one item of `publishBatch`: the payload is taken as it is, the routing key checked by its own rules. */
export const publishItemSchema = z
  .strictObject({ ...messageFields, routingKey: z.unknown().optional(), payload: z.unknown() })
  .refine(oneStart, ONE_START)

/** Options of `publish`: each copy's options, the caller's transaction, and what to do when nothing matches. */
export interface PublishOptions extends MessageOptions {
  /** A pg client inside `BEGIN`, or a Kysely transaction: every copy exists iff it commits. */
  tx?: TransactionLike
  /** When no binding matches: `'count'` (default) or `'error'` (throw `UnroutableError`). */
  unrouted?: Unrouted
}

/** Options of `publishBatch`. */
export interface PublishBatchOptions {
  /** A pg client inside `BEGIN`, or a Kysely transaction: the whole batch exists iff it commits. */
  tx?: TransactionLike
  /** When a message matches no binding: `'count'` it (default) or `'error'` (throw, write nothing). */
  unrouted?: Unrouted
}

/** One message of `publishBatch`: its routing key, payload and options. */
export interface PublishItem<P = unknown> extends MessageOptions {
  routingKey: string
  payload: P
}

/**
 * What a publish did: the queues it reached (by name, each once) and, at the same positions, the
 * id of the message in each. Empty when nothing matched.
 */
export interface PublishResult {
  readonly queues: string[]
  readonly ids: string[]
  /**
   * The queues where a message with the same `dedupeKey` was still waiting or in flight: no copy
   * was written there, and `ids` has that message's id.
   */
  readonly duplicates: string[]
}
