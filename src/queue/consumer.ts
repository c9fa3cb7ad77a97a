import { z } from 'zod'
import type { Executor } from '../db/executor.js'
import { durationMs, positiveDurationMs } from '../duration.js'
import { InvalidOptionsError, LeaseLostError } from '../errors.js'
import type { MessageRow } from '../queries/message-row.js'
import * as m from '../queries/messages.js'
import type { SchemaName } from '../schema-name.js'
import { parseOptions } from '../validation.js'
import { queueNameOf, type QueueRef } from './define-queue.js'
import { messageFromRow, type Delivery, type Message } from './message.js'
import { decodePayload } from './payload-codec.js'

/** zod schema for the options of `receive`. */
export const receiveOptionsSchema = z.strictObject({
  max: z.number().int().min(1).max(1000).optional(),
  visibilityTimeout: positiveDurationMs.optional(),
  wait: durationMs.optional(),
})

/** Options of `receive`. */
export interface ReceiveOptions {
  /** At most this many messages, 1 to 1000; default 1. */
  max?: number
  /** The lease of these deliveries; default the queue's. */
  visibilityTimeout?: number | string
  /** Long poll: wait up to this long for a message when none is ready; default 0. */
  wait?: number | string
}

/** Options of `nack`. */
export interface NackOptions {
  /** Retry after this long instead of the queue's backoff. */
  delay?: number | string
  /** The failure, recorded on the message as last_error. */
  error?: unknown
  /** Dead-letter now, whatever attempts are left. */
  deadLetter?: boolean
  tx?: unknown
}

export const nackOptionsSchema = z.strictObject({
  delay: durationMs.optional(),
  error: z.unknown().optional(),
  deadLetter: z.boolean().optional(),
  tx: z.unknown().optional(),
})

/**
 * How a failure is written down: an Error's name and message (and stack), or the value as text.
 * U+0000 becomes U+FFFD: Postgres text cannot hold it, and a nack must not fail over the wording
 * of an error.
 */
export function describeError(error: unknown): string | null {
  if (error === undefined || error === null) return null
  const text = error instanceof Error
    ? (error.stack ?? `${error.name}: ${error.message}`)
    : typeof error === 'string' ? error : (safeJson(error) ?? String(error))
  return text.replaceAll('\u0000', '\uFFFD')
}

function safeJson(value: unknown): string | undefined {
  try {
    return JSON.stringify(value)
  } catch {
    return undefined // circular, or a BigInt: String() will do
  }
}

/** Claims ready messages once; see {@link claimedMessages} for typed queues. */
export async function claim<P>(db: Executor, s: SchemaName, ref: QueueRef<P>, max: number, visibilityTimeoutMs: number | null): Promise<Message<P>[]> {
  return claimedMessages(db, s, ref, await m.receive(db, s, queueNameOf(ref), max, visibilityTimeoutMs))
}

/**
 * Claimed rows as messages. For a typed queue, a payload that no longer matches the schema is
 * dead-lettered with the reason and left out of the result.
 */
export async function claimedMessages<P>(db: Executor, s: SchemaName, ref: QueueRef<P>, rows: readonly MessageRow[]): Promise<Message<P>[]> {
  if (typeof ref === 'string') return rows.map((row) => messageFromRow<P>(row))
  const messages: Message<P>[] = []
  for (const row of rows) {
    const parsed = ref.schema.safeParse(decodePayload(row))
    if (parsed.success) {
      messages.push(messageFromRow<P>(row, parsed.data))
    } else {
      const reason = `payload does not match the schema of queue '${ref.name}': ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`
      await m.nack(db, s, { id: row.id, lease: row.lease as string, delayMs: null, error: reason, dead: true })
    }
  }
  return messages
}

function deliveries(input: Delivery | readonly Delivery[]): readonly Delivery[] {
  const list = Array.isArray(input) ? input : [input as Delivery]
  for (const d of list) {
    if (typeof d?.id !== 'string' || typeof d?.lease !== 'string') {
      throw new InvalidOptionsError('ack, nack and extend take messages as returned by receive (with id and lease)')
    }
  }
  return list
}

/** Acks deliveries; throws {@link LeaseLostError} naming those whose lease was lost (the rest are acked). */
export async function ack(db: Executor, s: SchemaName, input: Delivery | readonly Delivery[]): Promise<void> {
  const list = deliveries(input)
  if (list.length === 0) return
  const acked = new Set(await m.ack(db, s, list.map((d) => d.id), list.map((d) => d.lease)))
  const lost = list.filter((d) => !acked.has(d.id)).map((d) => d.id)
  if (lost.length > 0) throw new LeaseLostError(lost)
}

/** Fails a delivery: retry later or dead-letter. Returns what happened. */
export async function nack(db: Executor, s: SchemaName, input: Delivery, options?: NackOptions): Promise<'retried' | 'dead' | 'dropped'> {
  const [d] = deliveries(input) as [Delivery]
  const o = parseOptions(nackOptionsSchema, options, 'nack options')
  const outcome = await m.nack(db, s, {
    id: d.id,
    lease: d.lease,
    delayMs: o.delay ?? null,
    error: describeError(o.error),
    dead: o.deadLetter ?? false,
  })
  if (outcome === null) throw new LeaseLostError([d.id])
  return outcome
}

/** Extends leases to now + duration; throws {@link LeaseLostError} for those lost. */
export async function extend(db: Executor, s: SchemaName, input: Delivery | readonly Delivery[], duration: number | string): Promise<void> {
  const list = deliveries(input)
  const ms = parseOptions(z.object({ duration: positiveDurationMs }), { duration }, 'extend duration').duration
  const held = new Set(await m.extend(db, s, list.map((d) => d.id), list.map((d) => d.lease), ms))
  const lost = list.filter((d) => !held.has(d.id)).map((d) => d.id)
  if (lost.length > 0) throw new LeaseLostError(lost)
}
