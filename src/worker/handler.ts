import type { PgClient } from '../db/pg-client.js'
import type { Message } from '../queue/message.js'

/**
 * What a handler gets besides the message. `signal` aborts when the handler times out, its lease
 * is lost or the worker stops for good; honour it in long work. In transactional mode `tx` is the
 * transaction the ack commits in: a pg client inside `BEGIN` ({@link PgClient}), or a Kysely
 * `Transaction` when the Postbox was given a Kysely instance (name its type as `work()`'s second
 * type parameter). Outside transactional mode `tx` is undefined.
 */
export interface HandlerContext<Tx = PgClient> {
  readonly signal: AbortSignal
  readonly tx: Tx | undefined
  /** Extends this delivery's lease now (leases are also extended automatically). */
  extend(duration: number | string): Promise<void>
}

/** The context of a handler run with `transactional: true`: `tx` is always there. */
export interface TransactionalContext<Tx = PgClient> extends HandlerContext<Tx> {
  readonly tx: Tx
}

/** A message handler: resolve to ack, throw to retry (or `NonRetryableError` to dead-letter). */
export type Handler<P, Tx = PgClient> = (message: Message<P>, ctx: HandlerContext<Tx>) => unknown

/** A handler for `transactional: true`: its writes on `ctx.tx` commit with the ack, or neither does. */
export type TransactionalHandler<P, Tx = PgClient> = (message: Message<P>, ctx: TransactionalContext<Tx>) => unknown
