import type { Executor } from '../db/executor.js'
import type { CoalescedWrite } from '../db/statement-coalescer.js'
import { InvalidOptionsError } from '../errors.js'
import * as q from '../queries/streams.js'
import { encodePayload } from '../queue/payload-codec.js'
import type { SchemaName } from '../schema-name.js'
import { withTraceContext } from '../tracing/trace-headers.js'
import { parseOptions } from '../validation.js'
import { assertStreamName } from './stream-name.js'
import { eventOptionsSchema, type AppendItem } from './stream-options.js'

/** What an append returns: the event's id and the partition it went to (its offset comes at commit). */
export interface AppendResult {
  id: string
  partition: number
}

const MAX_BATCH = 10_000
const ITEM_KEYS = new Set(['payload', 'key', 'headers'])

/** An item is an envelope when it is a plain object with a payload key and only envelope keys. */
function isEnvelope(item: unknown): item is AppendItem {
  if (typeof item !== 'object' || item === null || !Object.hasOwn(item, 'payload')) return false
  if (Array.isArray(item) || item instanceof Uint8Array) return false
  return Object.keys(item).every((k) => ITEM_KEYS.has(k))
}

/** An event as the append statements take it: payload encoded, trace context in the headers. */
export function outgoingEvent(payload: unknown, o: { key?: string; headers?: Record<string, string> }): q.OutgoingEvent {
  const encoded = encodePayload(payload)
  const headers = withTraceContext(o.headers)
  return { encoding: encoded.encoding, json: encoded.json, body: encoded.body, key: o.key ?? null, headers: headers ? JSON.stringify(headers) : null }
}

/** Appends one event on `db` (the pool, or the caller's transaction); options already validated. */
export async function append(db: Executor, s: SchemaName, stream: string, payload: unknown, o: { key?: string; headers?: Record<string, string> }): Promise<AppendResult> {
  return q.appendEvent(db, s, assertStreamName(stream), outgoingEvent(payload, o))
}

/** Appends many events in one statement; returns their ids and partitions in input order. */
export async function appendBatch(db: Executor, s: SchemaName, stream: string, items: readonly unknown[]): Promise<AppendResult[]> {
  assertStreamName(stream)
  if (!Array.isArray(items)) throw new InvalidOptionsError('appendBatch takes an array of payloads or { payload, key?, headers? } items')
  if (items.length > MAX_BATCH) throw new InvalidOptionsError(`a batch holds at most ${MAX_BATCH} events, got ${items.length}; split it`)
  if (items.length === 0) return []
  const events = items.map((item) => {
    if (!isEnvelope(item)) return outgoingEvent(item, {})
    const { payload, ...options } = item
    return outgoingEvent(payload, parseOptions(eventOptionsSchema, options, 'event options'))
  })
  return q.appendEvents(db, s, stream, events)
}

/**
 * Appends outside a transaction as a StatementCoalescer writes them: many events as one
 * `append_events`, in the order handed over (so they get ids, and then offsets, in that order).
 */
export function appendStatements(db: Executor, s: SchemaName): CoalescedWrite<q.OutgoingEvent, AppendResult> {
  return { many: (stream, events) => q.appendEvents(db, s, stream, events), one: (stream, event) => q.appendEvent(db, s, stream, event) }
}
