import type { Database } from '../db/database.js'
import { LeaseLostError } from '../errors.js'
import { ackDeliveries, failDelivery } from '../queue/consumer.js'
import type { Delivery } from '../queue/message.js'
import type { SchemaName } from '../schema-name.js'
import type { Completer, FailOutcome, HandlerRun } from './completer.js'

/**
 * The transactional {@link Completer}: the handler runs inside a transaction (its `ctx.tx`) and
 * the fenced ack is written in that same transaction, so the handler's writes and the ack commit
 * together or not at all. A lost lease makes the ack find no row; throwing then rolls back.
 */
export class TransactionalAck implements Completer<Delivery> {
  readonly holdsConnection = true

  constructor(
    private readonly db: Database,
    private readonly s: SchemaName,
  ) {}

  complete(run: HandlerRun<Delivery>): Promise<void> {
    return this.db.transaction(async (tx, handle) => {
      await run.call(handle)
      run.completing()
      const acked = await ackDeliveries(tx, this.s, [run.delivery])
      if (acked.length === 0) throw new LeaseLostError([run.delivery.id])
    })
  }

  /** Records the failure on the pool, after the handler's transaction rolled back. */
  fail(delivery: Delivery, error: unknown): Promise<FailOutcome> {
    return failDelivery(this.db, this.s, delivery, error)
  }

  /** Nothing waits: each ack commits with its handler's transaction. */
  async drain(): Promise<void> {}
}
