import { z } from 'zod'
import type { Executor } from '../db/executor.js'
import { durationMs, positiveDurationMs } from '../duration.js'
import { describeError } from '../describe-error.js'
import { InvalidOptionsError, LeaseLostError, NonRetryableError } from '../errors.js'
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
  const acked = new Set(await ackDeliveries(db, s, list))
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
  const held = new Set(await extendLeases(db, s, list, ms))
  const lost = list.filter((d) => !held.has(d.id)).map((d) => d.id)
  if (lost.length > 0) throw new LeaseLostError(lost)
}

// The statements a worker runs for the deliveries it holds. They trust their input (the worker
// made it) and report per id rather than throw, so that one lost lease does not fail a batch.

/** Acks deliveries fenced by their leases, on the pool or inside a transaction; returns the ids acked. */
export function ackDeliveries(db: Executor, s: SchemaName, list: readonly Delivery[]): Promise<string[]> {
  return m.ack(db, s, list.map((d) => d.id), list.map((d) => d.lease))
}

/**
 * Acks `acks` and claims up to `max` messages of `ref` in one statement (see `ackAndReceive` in
 * queries/messages.ts). Returns the ids acked and the claimed rows; {@link claimedMessages} turns
 * the rows into messages.
 */
export function ackAndClaim(
  db: Executor,
  s: SchemaName,
  acks: readonly Delivery[],
  ref: QueueRef<unknown>,
  max: number,
  visibilityTimeoutMs: number | null,
): Promise<{ acked: string[]; rows: MessageRow[] }> {
  const ids = acks.map((d) => d.id)
  const leases = acks.map((d) => d.lease)
  return m.ackAndReceive(db, s, { ids, leases }, queueNameOf(ref), max, visibilityTimeoutMs)
}

/**
 * Records a failed handler run: retried after the queue's backoff, or dead-lettered after its last
 * attempt or at once for a {@link NonRetryableError}. Null when the lease was lost.
 */
export function failDelivery(db: Executor, s: SchemaName, delivery: Delivery, error: unknown): Promise<m.NackOutcome> {
  const dead = error instanceof NonRetryableError
  return m.nack(db, s, { id: delivery.id, lease: delivery.lease, delayMs: null, error: describeError(error), dead })
}

/** Gives deliveries back, visible again at once with their attempt counted; returns the ids released. */
export function releaseDeliveries(db: Executor, s: SchemaName, list: readonly Delivery[]): Promise<string[]> {
  return m.release(db, s, list.map((d) => d.id), list.map((d) => d.lease))
}

/** Extends leases to now + `durationMs`; returns the ids whose lease is still held. */
export function extendLeases(db: Executor, s: SchemaName, list: readonly Delivery[], durationMs: number): Promise<string[]> {
  return m.extend(db, s, list.map((d) => d.id), list.map((d) => d.lease), durationMs)
}
