import { EventEmitter } from 'node:events'
import { sleep } from '../background-loop.js'
import type { Database } from '../db/database.js'
import { describeError } from '../describe-error.js'
import { StreamFencedError, StreamNotFoundError } from '../errors.js'
import type { Logger } from '../logger.js'
import type { WakeUps } from '../notify/wake-ups.js'
import { stampAndRead } from '../queries/streams.js'
import type { SchemaName } from '../schema-name.js'
import type { Completer, HandlerRun } from '../worker/completer.js'
import { ConsumerLifecycle } from '../worker/consumer-lifecycle.js'
import type { StopOptions } from '../worker/worker-options.js'
import type { ConsumeSettings, StreamHandler } from './consume-options.js'
import { GroupMembership, type OwnedPartition } from './group-membership.js'
import { InlineOffsetCommit, TransactionalOffsetCommit, type PartitionBatch } from './offset-commit.js'
import { eventFromRow, type StreamEvent } from './stream-event.js'
import { inConsumerSpan } from '../tracing/consumer-span.js'

/** What a stream consumer needs from its Postbox. */
export interface StreamConsumerDeps {
  readonly db: Database
  readonly schema: SchemaName
  readonly wakeUps: WakeUps
  readonly logger: Logger
}

/**
 * What a stream consumer reports. `assigned`/`revoked` when its partitions change; `committed`
 * after each batch's offset commit; `failed` with every handler error (the partition retries the
 * event after the backoff); `fenced` when a commit was refused because the partition moved to
 * another member (the batch is read again there); `lostToRetention` when retention dropped events
 * before this group read them; `error` for failures of the consumer itself, which it survives by
 * retrying; `stopped` once `stop()` is done.
 */
export interface StreamConsumerEvents {
  assigned: [partitions: number[]]
  revoked: [partitions: number[]]
  committed: [info: { partition: number; offset: string; events: number }]
  failed: [event: StreamEvent<unknown>, error: unknown]
  fenced: [partition: number]
  lostToRetention: [info: { partition: number; events: number }]
  error: [error: unknown]
  stopped: []
}

const MAX_RETRY_MS = 60_000

/**
 * One member of a consumer group reading a stream, created by `postbox.consume()`. A
 * {@link GroupMembership} heartbeats and keeps its share of the partitions; each round stamps
 * what committed, reads the next batch of every owned partition in one statement, runs the
 * handler over each partition's batch in offset order (partitions side by side) and commits one
 * offset per batch through the offset-commit {@link Completer}, inline or in the handlers'
 * transaction. An idle member waits for a wake-up on `stream/<name>` or the poll interval.
 * Started and stopped by the same {@link ConsumerLifecycle} as queue workers.
 */
export class StreamConsumer<P = unknown, Tx = unknown> extends EventEmitter<StreamConsumerEvents> {
  /** This member's id in its group. */
  readonly member: string
  private readonly membership: GroupMembership
  private readonly completer: Completer<PartitionBatch>
  private readonly lifecycle: ConsumerLifecycle<never>
  private readonly halt = new AbortController()
  /** Aborted (and replaced) when the owned partitions change or the consumer stops: ends a wait. */
  private nudge = new AbortController()
  private loop: Promise<void> | undefined
  private round: Promise<unknown> = Promise.resolve()
  private paused = false
  /** Set when the stream does not exist (never created, or deleted): the consumer stops itself. */
  private missing: StreamNotFoundError | undefined
  private readonly wakeKey: string
  /** The user's handler, typed without P and Tx so that a consumer of any payload is a `StreamConsumer`. */
  private readonly handler: StreamHandler<unknown, unknown>

  constructor(
    private readonly deps: StreamConsumerDeps,
    readonly stream: string,
    readonly group: string,
    handler: StreamHandler<P, Tx>,
    private readonly settings: ConsumeSettings,
  ) {
    super()
    this.handler = handler as unknown as StreamHandler<unknown, unknown>
    this.member = settings.memberId
    this.wakeKey = `stream/${stream}`
    const report = (error: unknown) => this.report(error)
    this.membership = new GroupMembership(
      {
        db: deps.db,
        schema: deps.schema,
        stream,
        group,
        member: this.member,
        sessionTimeoutMs: settings.sessionTimeoutMs,
        heartbeatMs: settings.heartbeatMs,
        from: settings.from,
      },
      {
        changed: (assigned, revoked) => {
          if (revoked.length > 0) this.emit('revoked', revoked)
          if (assigned.length > 0) this.emit('assigned', assigned)
          this.poke()
        },
        quiesce: () => this.round.then(() => undefined, () => undefined),
        report,
      },
    )
    this.completer = settings.transactional ? new TransactionalOffsetCommit(deps.db, deps.schema) : new InlineOffsetCommit(deps.db, deps.schema)
    this.lifecycle = new ConsumerLifecycle<never>(
      {
        claims: {
          start: () => {
            this.loop ??= this.run()
          },
          pause: async () => {
            this.paused = true
            await this.round.catch(() => {})
          },
          resume: () => {
            this.paused = false
            this.poke()
          },
          stop: async () => {
            this.halt.abort()
            this.poke()
            return []
          },
        },
        runner: {
          finish: async (timeoutMs) => {
            const done = new AbortController()
            await Promise.race([(this.loop ?? Promise.resolve()).finally(() => done.abort()), sleep(timeoutMs, done.signal)])
            done.abort()
            return []
          },
        },
        completer: this.completer,
        keeper: this.membership,
        giveBack: async () => {},
        report,
        warn: (message, error) => deps.logger.warn({ err: describeError(error) }, message),
      },
      `StreamConsumer(${stream}, group ${group}, member ${this.member})`,
      () => this.emit('stopped'),
    )
  }

  /** The partitions this member owns now. */
  get partitions(): number[] {
    return [...this.membership.owned.keys()].sort((a, b) => a - b)
  }

  /** Joins the group and starts reading. Idempotent. */
  start(): void {
    this.lifecycle.start()
  }

  /**
   * Resolves after the member's first heartbeat: it has joined the group and taken its first
   * share. Rejects with a {@link StreamNotFoundError} when the stream does not exist.
   */
  async ready(): Promise<void> {
    await this.membership.ready()
    if (this.missing) throw this.missing
  }

  /** Stops reading; resolves once a batch under way has finished. */
  pause(): Promise<void> {
    return this.lifecycle.pause()
  }

  /** Reads again after `pause()`. */
  resume(): void {
    this.lifecycle.resume()
  }

  /**
   * Stops gracefully: reads nothing more, lets the batches under way finish and commit (within
   * `timeout`, default 30s), then releases its partitions and leaves the group, so the other
   * members take them over at their next heartbeat. Idempotent; never throws.
   */
  stop(options?: StopOptions): Promise<void> {
    return this.lifecycle.stop(options)
  }

  private poke(): void {
    const previous = this.nudge
    this.nudge = new AbortController()
    previous.abort()
  }

  /**
   * Reports a failure of the consumer itself, which it survives by retrying; except that a stream
   * that does not exist (never created, or deleted while read) has nothing to read, so the
   * consumer reports it once and stops.
   */
  private report(error: unknown): void {
    if (error instanceof StreamNotFoundError) {
      if (this.missing) return
      this.missing = error
      void this.stop()
    }
    if (this.listenerCount('error') > 0) this.emit('error', error)
    else this.deps.logger.error({ err: describeError(error) }, 'postbox: stream consumer error')
  }

  private async run(): Promise<void> {
    await this.membership.ready()
    let idle = 0
    let failures = 0
    while (!this.halt.signal.aborted) {
      const nudged = this.nudge.signal
      const ready = this.paused ? [] : [...this.membership.owned.values()].filter((p) => p.retryAt <= Date.now())
      if (ready.length === 0) {
        const retryAt = Math.min(...[...this.membership.owned.values()].map((p) => p.retryAt).filter((t) => t > 0))
        await sleep(Math.min(this.settings.pollMs, Number.isFinite(retryAt) ? retryAt - Date.now() : Infinity), nudged)
        continue
      }
      try {
        let batches = await this.fetch(ready)
        if (batches.length === 0) {
          const found = await this.deps.wakeUps.wait([this.wakeKey], this.settings.pollMs, nudged, async () => {
            batches = await this.fetch(ready)
            return batches.length > 0
          }, idle++)
          if (!found) continue
        }
        idle = 0
        this.round = this.processAll(batches)
        await this.round
        failures = 0
      } catch (error) {
        this.report(error)
        await sleep(Math.min(100 * 2 ** failures++, this.settings.pollMs), this.halt.signal)
      }
    }
  }

  /**
   * Stamps what committed and reads the next batch of each ready partition, in one statement: one
   * round trip per look, also right after a wake-up (two before: idle-group latency p50 went from
   * 2.26x to the figure in docs/performance.md, "Streams").
   */
  private async fetch(ready: readonly OwnedPartition[]): Promise<{ owned: OwnedPartition; events: StreamEvent<P>[] }[]> {
    const { db, schema } = this.deps
    const rows = await stampAndRead(db, schema, this.stream, ready.map((p) => p.partition), ready.map((p) => p.position), this.settings.batchSize)
    const byPartition = new Map<number, StreamEvent<P>[]>()
    for (const row of rows) {
      let list = byPartition.get(row.partition)
      if (!list) byPartition.set(row.partition, (list = []))
      list.push(eventFromRow<P>(this.stream, row))
    }
    return ready.filter((p) => byPartition.has(p.partition)).map((owned) => ({ owned, events: byPartition.get(owned.partition) as StreamEvent<P>[] }))
  }

  /** Processes the batches of a round, at most `concurrency` partitions at once. */
  private async processAll(batches: { owned: OwnedPartition; events: StreamEvent<P>[] }[]): Promise<void> {
    const queue = [...batches]
    const lane = async () => {
      for (let next = queue.shift(); next; next = queue.shift()) await this.process(next)
    }
    await Promise.all(Array.from({ length: Math.min(this.settings.concurrency, queue.length) }, lane))
  }

  /** Runs the handler over one partition's batch in offset order and commits its offset once. */
  private async process({ owned, events }: { owned: OwnedPartition; events: StreamEvent<P>[] }): Promise<void> {
    // Given back or taken away since the read: the batch is the new owner's now.
    if (this.membership.owned.get(owned.partition) !== owned) return
    // Offsets are dense: a gap before the first event is what retention dropped unread.
    const lost = Number(BigInt((events[0] as StreamEvent<P>).offset) - BigInt(owned.position) - 1n)
    if (lost > 0) this.emit('lostToRetention', { partition: owned.partition, events: lost })
    const batch: PartitionBatch = {
      stream: this.stream,
      group: this.group,
      member: this.member,
      partition: owned.partition,
      epoch: owned.epoch,
      events: events as StreamEvent<unknown>[],
      lost: Math.max(0, lost),
      processed: null,
    }
    let failedOn: StreamEvent<P> | undefined
    const run: HandlerRun<PartitionBatch> = {
      delivery: batch,
      abandoned: false,
      completing: () => {},
      call: async (tx) => {
        const ctx = { signal: this.halt.signal, tx, group: this.group, member: this.member }
        for (const event of events) {
          failedOn = event
          // In a consumer span whose parent is the trace context the append put in the headers.
          await inConsumerSpan({ queue: event.stream, id: event.id, headers: event.headers, attempt: 1 }, async () => this.handler(event, ctx))
          batch.processed = event.offset
        }
        failedOn = undefined
      },
    }
    try {
      await this.completer.complete(run)
      owned.position = batch.processed as string
      owned.failures = 0
      this.emit('committed', { partition: owned.partition, offset: owned.position, events: events.length })
    } catch (error) {
      if (error instanceof StreamFencedError) {
        this.membership.drop(owned.partition)
        this.emit('fenced', owned.partition)
        return
      }
      if (failedOn === undefined) throw error // the commit itself failed: the round retries
      this.emit('failed', failedOn as StreamEvent<unknown>, error)
      if (this.completer.holdsConnection) batch.processed = null // rolled back with the transaction
      try {
        await this.completer.fail(batch, error)
        if (batch.processed !== null) owned.position = batch.processed
      } catch (failError) {
        if (failError instanceof StreamFencedError) {
          this.membership.drop(owned.partition)
          this.emit('fenced', owned.partition)
          return
        }
        this.report(failError)
      }
      owned.retryAt = Date.now() + Math.min(this.settings.retryDelayMs * 2 ** owned.failures++, MAX_RETRY_MS)
    }
  }
}
