import type { z } from 'zod'
import type { Executor } from '../db/executor.js'
import { InvalidOptionsError } from '../errors.js'
import * as q from '../queries/publish.js'
import { selectUnroutedStats } from '../queries/bindings.js'
import { outgoingPayload } from '../queue/producer.js'
import type { SchemaName } from '../schema-name.js'
import { parseOptions } from '../validation.js'
import { publishItemSchema, type publishOptionsSchema, type PublishResult, type Unrouted } from './publish-options.js'
import { assertRoutingKey } from './topic-syntax.js'

/** Options of one publish after validation, without `tx`. */
export type ParsedPublishOptions = Omit<z.output<typeof publishOptionsSchema>, 'tx'>

/**
 * Publishes one message on `db` (the pool, or the caller's transaction) in one statement: a copy
 * goes to each queue bound by a matching pattern, once per queue.
 */
export async function publish(db: Executor, s: SchemaName, routingKey: string, payload: unknown, options: ParsedPublishOptions = {}): Promise<PublishResult> {
  const { unrouted = 'count', ...message } = options
  return q.publish(db, s, assertRoutingKey(routingKey), outgoingPayload(payload, message), unrouted)
}

const MAX_BATCH = 10_000

/** Publishes many messages in one statement, each routed by its own key; returns what each reached, in order. */
export async function publishBatch(db: Executor, s: SchemaName, items: readonly unknown[], unrouted: Unrouted = 'count'): Promise<PublishResult[]> {
  if (!Array.isArray(items)) throw new InvalidOptionsError('publishBatch takes an array of { routingKey, payload, ...options } items')
  if (items.length > MAX_BATCH) throw new InvalidOptionsError(`a batch holds at most ${MAX_BATCH} messages, got ${items.length}; split it`)
  if (items.length === 0) return []
  const keys: string[] = []
  const messages = items.map((item, i) => {
    const { routingKey, payload, ...options } = parseOptions(publishItemSchema, item, `publishBatch item ${i + 1}`)
    keys.push(assertRoutingKey(routingKey))
    return outgoingPayload(payload, options)
  })
  return q.publishBatch(db, s, keys, messages, unrouted)
}

/** Unroutable publishes so far (committed ones), for monitoring. */
export interface UnroutedStats {
  /** How many publishes reached no queue and were counted (`unrouted: 'count'`). */
  count: number
  /** The routing key of the latest of them. */
  lastRoutingKey: string | null
  /** When the latest was published (database time). */
  lastAt: Date | null
}

/** Reads the `unrouted_stats` view. */
export async function unroutedStats(db: Executor, s: SchemaName): Promise<UnroutedStats> {
  const row = await selectUnroutedStats(db, s)
  return { count: row.count, lastRoutingKey: row.last_routing_key, lastAt: row.last_at }
}
