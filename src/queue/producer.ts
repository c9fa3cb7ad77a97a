import type { z } from 'zod'
import type { Executor } from '../db/executor.js'
import type { CoalescedWrite } from '../db/statement-coalescer.js'
import { InvalidOptionsError, InvalidPayloadError } from '../errors.js'
import * as m from '../queries/messages.js'
import type { SchemaName } from '../schema-name.js'
import { withTraceContext } from '../tracing/trace-headers.js'
import { parseOptions } from '../validation.js'
import { queueNameOf, type QueueRef } from './define-queue.js'
import { encodePayload } from './payload-codec.js'
import { messageOptionsSchema, RATE_KEY_HEADER, type MessageOptions } from './send-options.js'

/** What `send` returns: the message id, and whether a waiting message with the same dedupe key was found instead. */
export interface SendResult {
  id: string
  duplicate: boolean
}

/** An item of `sendBatch` with its own options. */
export interface BatchItem<P> extends MessageOptions {
  payload: P
}

const ITEM_KEYS = new Set(['payload', 'delay', 'availableAt', 'priority', 'dedupeKey', 'groupKey', 'rateKey', 'headers'])

/** An item is an envelope when it is a plain object with a payload key and only envelope keys. */
function isEnvelope(item: unknown): item is BatchItem<unknown> {
  if (typeof item !== 'object' || item === null || !Object.hasOwn(item, 'payload')) return false
  if (Array.isArray(item) || item instanceof Uint8Array) return false
  return Object.keys(item).every((k) => ITEM_KEYS.has(k))
}

/** The payload as a typed queue's schema parses it (a plain name takes any); throws InvalidPayloadError. */
export function validatePayload(ref: QueueRef<unknown>, payload: unknown): unknown {
  if (typeof ref === 'string') return payload
  const result = ref.schema.safeParse(payload)
  if (result.success) return result.data
  const summary = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')
  throw new InvalidPayloadError(`payload does not match the schema of queue '${ref.name}': ${summary}`, result.error.issues)
}

/** Per-message options after validation: durations in milliseconds. */
export type ParsedMessageOptions = z.output<typeof messageOptionsSchema>

/** A message as the send statements take it: payload checked against a typed queue's schema and encoded. */
export function outgoing(ref: QueueRef<unknown>, payload: unknown, o: ParsedMessageOptions = {}): m.OutgoingMessage {
  return outgoingPayload(validatePayload(ref, payload), o)
}

/** A message as the send and publish statements take it, from a payload that needs no schema check. */
export function outgoingPayload(payload: unknown, o: ParsedMessageOptions = {}): m.OutgoingMessage {
  const encoded = encodePayload(payload)
  const headers = withTraceContext(o.rateKey === undefined ? o.headers : { ...o.headers, [RATE_KEY_HEADER]: o.rateKey })
  // Fields are copied one by one: a spread ({ ...encoded }) cost several times the encoding itself.
  return {
    encoding: encoded.encoding,
    json: encoded.json,
    body: encoded.body,
    delayMs: o.delay ?? null,
    availableAt: o.availableAt ?? null,
    priority: o.priority ?? 0,
    dedupeKey: o.dedupeKey ?? null,
    groupKey: o.groupKey ?? null,
    headers: headers ? JSON.stringify(headers) : null,
  }
}

/** Sends one message on `db` (the pool, or the caller's transaction); options already validated. */
export async function send(db: Executor, s: SchemaName, ref: QueueRef<unknown>, payload: unknown, options: ParsedMessageOptions = {}): Promise<SendResult> {
  const queue = queueNameOf(ref)
  return m.sendMessage(db, s, queue, outgoing(ref, payload, options))
}

const MAX_BATCH = 10_000

/** Sends many messages to one queue in one statement; returns their ids in input order. */
export async function sendBatch(db: Executor, s: SchemaName, ref: QueueRef<unknown>, items: readonly unknown[]): Promise<string[]> {
  const queue = queueNameOf(ref)
  if (!Array.isArray(items)) throw new InvalidOptionsError('sendBatch takes an array of payloads or { payload, ...options } items')
  if (items.length > MAX_BATCH) throw new InvalidOptionsError(`a batch holds at most ${MAX_BATCH} messages, got ${items.length}; split it`)
  if (items.length === 0) return []
  const messages = items.map((item) => {
    if (!isEnvelope(item)) return outgoing(ref, item, {})
    const { payload, ...options } = item
    return outgoing(ref, payload, parseOptions(messageOptionsSchema, options, 'message options'))
  })
  const rows = await m.sendBatch(db, s, queue, messages)
  return rows.map((row) => row.id)
}

/** Sends outside a transaction as a StatementCoalescer writes them: many as one `send_batch`, one as `send`. */
export function sendStatements(db: Executor, s: SchemaName): CoalescedWrite<m.OutgoingMessage, SendResult> {
  return { many: (queue, ms) => m.sendBatch(db, s, queue, ms), one: (queue, message) => m.sendMessage(db, s, queue, message) }
}
