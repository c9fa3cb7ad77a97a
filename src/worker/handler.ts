import type { PoolClient } from 'pg'
import type { Message } from '../queue/message.js'

/**
 * What a handler gets besides the message. `signal` aborts when the handler times out, its lease
 * is lost or the worker stops for good; honour it in long work. In transactional mode `tx` is the
 * transaction the ack commits in: a pg client inside `BEGIN`, or a Kysely `Transaction` when the
 * Postbox was given a Kysely instance.
 */
export interface HandlerContext<Tx = PoolClient> {
  readonly signal: AbortSignal
  readonly tx: Tx | undefined
  /** Extends this delivery's lease now (leases are also extended automatically). */
  extend(duration: number | string): Promise<void>
}

/** A message handler: resolve to ack, throw to retry (or `NonRetryableError` to dead-letter). */
export type Handler<P, Tx = PoolClient> = (message: Message<P>, ctx: HandlerContext<Tx>) => unknown
