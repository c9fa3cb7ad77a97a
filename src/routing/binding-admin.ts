import { z } from 'zod'
import type { Executor } from '../db/executor.js'
import * as q from '../queries/bindings.js'
import { queueNameOf, type QueueRef } from '../queue/define-queue.js'
import { storableText } from '../queue/send-options.js'
import type { SchemaName } from '../schema-name.js'
import { ownRecord, parseOptions } from '../validation.js'
import { filterJson, type HeaderFilter } from './header-filter.js'
import { assertPattern, assertRoutingKey } from './topic-syntax.js'

/** A binding: the queue that receives a copy of every publish whose routing key matches the pattern (and whose headers pass the filter). */
export interface Binding {
  readonly queue: string
  readonly pattern: string
  /** The header filter, or null when the binding has none. */
  readonly filter: HeaderFilter | null
}

/** Options of `bind`. */
export interface BindOptions {
  /** Only messages whose headers match (keys AND, listed values OR, a missing header fails). */
  filter?: HeaderFilter
}

const bindOptionsSchema = z.strictObject({ filter: z.unknown().optional() })
const listOptionsSchema = z.strictObject({ queue: z.string().optional() })
const matchOptionsSchema = z.strictObject({ headers: ownRecord(storableText, storableText).optional() })

/**
 * Bindings: bind (idempotent; binding the same queue and pattern again replaces the filter),
 * unbind, list, and the dry run of routing. Input is checked here before any statement runs, and
 * again by the SQL functions.
 */
export class BindingAdmin {
  constructor(
    private readonly db: Executor,
    private readonly s: SchemaName,
  ) {}

  /** Binds; true when the binding was created or its filter changed, false when it was already so. */
  async bind(queue: QueueRef<unknown>, pattern: string, options?: BindOptions): Promise<boolean> {
    const name = queueNameOf(queue)
    assertPattern(pattern)
    const { filter } = parseOptions(bindOptionsSchema, options, 'bind options')
    return q.bind(this.db, this.s, name, pattern, filterJson(filter))
  }

  /** Removes a binding; true when there was one. */
  async unbind(queue: QueueRef<unknown>, pattern: string): Promise<boolean> {
    return q.unbind(this.db, this.s, queueNameOf(queue), assertPattern(pattern))
  }

  /** Every binding, or one queue's, by queue then pattern. */
  async list(options?: { queue?: string }): Promise<Binding[]> {
    const { queue } = parseOptions(listOptionsSchema, options, 'listBindings options')
    const rows = await q.selectBindings(this.db, this.s, queue === undefined ? null : queueNameOf(queue))
    return rows.map((row) => ({ queue: row.queue, pattern: row.pattern, filter: row.filter }))
  }

  /** The queues a publish with this routing key and these headers would reach now, sorted. */
  async matchingQueues(routingKey: string, options?: { headers?: Record<string, string> }): Promise<string[]> {
    const { headers } = parseOptions(matchOptionsSchema, options, 'matchingQueues options')
    return q.matchingQueues(this.db, this.s, assertRoutingKey(routingKey), headers ? JSON.stringify(headers) : null)
  }
}
