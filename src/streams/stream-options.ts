import { z } from 'zod'
import { positiveDurationMs } from '../duration.js'
import { storableText, txSchema } from '../queue/send-options.js'
import type { TransactionLike } from '../db/transaction.js'

/** Options of `createStream`. */
export interface StreamOptions {
  /** How many partitions, 1 to 256; default 1. Fixed once the stream exists (keys map to them). */
  partitions?: number
  /** How long events are kept, such as `'7d'` (the default); whole segments of an eighth of it are dropped. */
  retention?: number | string
}

/** A stream's settings, as `getStream`/`listStreams` return them. */
export interface StreamInfo {
  name: string
  partitions: number
  retentionMs: number
  createdAt: Date
}

export const streamOptionsSchema = z.strictObject({
  partitions: z.number().int().min(1).max(256).optional(),
  retention: positiveDurationMs.optional(),
})

/** Options of `append`: the event's key and headers, and the caller's transaction. */
export interface AppendOptions {
  /** Picks the partition: the same key always the same partition. Without one, events spread at random. */
  key?: string
  /** String metadata, for example `traceparent` (added by itself inside an OpenTelemetry span). */
  headers?: Record<string, string>
  /** A pg client inside `BEGIN`, or a Kysely transaction: the event exists iff it commits. */
  tx?: TransactionLike
}

/** An item of `appendBatch` with its own key and headers. */
export interface AppendItem<P = unknown> {
  payload: P
  key?: string
  headers?: Record<string, string>
}

const eventFields = {
  key: storableText.min(1).max(1024).optional(),
  headers: z.record(storableText, storableText).optional(),
}

export const eventOptionsSchema = z.strictObject(eventFields)
export const appendOptionsSchema = z.strictObject({ ...eventFields, tx: txSchema.optional() })
export const appendBatchOptionsSchema = z.strictObject({ tx: txSchema.optional() })

/** Options of `readStream`: one partition, after an offset (default: from the start), at most `limit` events. */
export interface ReadStreamOptions {
  /** Default 0. */
  partition?: number
  /** Read events after this offset (a string of an integer); default '0', the start of the log. */
  after?: string
  /** At most this many events, 1 to 10,000; default 100. */
  limit?: number
}

/** An offset: a string of a non-negative integer (Postgres bigint). */
export const offsetSchema = z.string().regex(/^(0|[1-9]\d{0,18})$/, 'must be a string of a non-negative integer, such as "41"')

export const readStreamOptionsSchema = z.strictObject({
  partition: z.number().int().min(0).max(255).optional(),
  after: offsetSchema.optional(),
  limit: z.number().int().min(1).max(10_000).optional(),
})

/** Where `seek` moves a group: the earliest retained event, after the newest, a time, or one partition's offset. */
export type SeekTo = 'earliest' | 'latest' | { timestamp: Date } | { partition: number; offset: string }

export const seekSchema = z.union([
  z.literal('earliest'),
  z.literal('latest'),
  z.strictObject({ timestamp: z.date().refine((d) => !Number.isNaN(d.getTime()), 'must be a valid date') }),
  z.strictObject({ partition: z.number().int().min(0).max(255), offset: offsetSchema }),
])
