import type { Database } from '../db/database.js'
import type { Executor } from '../db/executor.js'
import { commitOffset } from '../queries/streams-groups.js'
import type { SchemaName } from '../schema-name.js'
import type { Completer, FailOutcome, HandlerRun } from '../worker/completer.js'
import type { StreamEvent } from './stream-event.js'

/**
 * A batch of one partition's events, as a member processes it: the unit a stream consumer hands
 * to its {@link Completer}. `processed` is the offset of the last event whose handler resolved.
 */
export interface PartitionBatch {
  readonly stream: string
  readonly group: string
  readonly member: string
  readonly partition: number
  readonly epoch: string
  readonly events: readonly StreamEvent<unknown>[]
  /** Events retention dropped before this member read them (a gap before the first event). */
  readonly lost: number
  processed: string | null
}

function commit(db: Executor, s: SchemaName, batch: PartitionBatch, offset: string): Promise<void> {
  return commitOffset(db, s, {
    stream: batch.stream,
    group: batch.group,
    partition: batch.partition,
    member: batch.member,
    epoch: batch.epoch,
    offset,
    lost: batch.lost,
  })
}

/**
 * The offset commit of a stream consumer, as the third {@link Completer} (after the queue's
 * AckBatcher and TransactionalAck): once per batch, never per event, fenced by the member and
 * epoch (a fenced commit throws `StreamFencedError`). At least once: the handlers run first, the
 * offset is committed after, so a crash in between delivers the batch again.
 */
export class InlineOffsetCommit implements Completer<PartitionBatch> {
  readonly holdsConnection = false

  constructor(
    private readonly db: Executor,
    private readonly s: SchemaName,
  ) {}

  async complete(run: HandlerRun<PartitionBatch>): Promise<void> {
    await run.call(undefined)
    run.completing()
    await commit(this.db, this.s, run.delivery, run.delivery.processed as string)
  }

  /** Commits the events that did succeed before the failing one, which is retried after the backoff. */
  async fail(batch: PartitionBatch, error: unknown): Promise<FailOutcome> {
    void error
    if (batch.processed !== null) await commit(this.db, this.s, batch, batch.processed)
    return 'retried'
  }

  async drain(): Promise<void> {}
}

/**
 * The transactional offset commit: the batch's handlers run in one transaction (their `ctx.tx`)
 * and the fenced offset commit is its last statement, so the handlers' writes and the offset
 * commit together or not at all: exactly-once effects in this database. A failed handler or a
 * fenced commit rolls the whole batch back.
 */
export class TransactionalOffsetCommit implements Completer<PartitionBatch> {
  readonly holdsConnection = true

  constructor(
    private readonly db: Database,
    private readonly s: SchemaName,
  ) {}

  complete(run: HandlerRun<PartitionBatch>): Promise<void> {
    return this.db.transaction(async (tx, handle) => {
      await run.call(handle)
      run.completing()
      await commit(tx, this.s, run.delivery, run.delivery.processed as string)
    })
  }

  /** Nothing to write: the batch rolled back, and is read again from the committed offset. */
  async fail(batch: PartitionBatch, error: unknown): Promise<FailOutcome> {
    void batch
    void error
    return 'retried'
  }

  async drain(): Promise<void> {}
}
