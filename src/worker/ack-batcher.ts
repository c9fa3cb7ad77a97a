import type { Executor } from '../db/executor.js'
import { LeaseLostError } from '../errors.js'
import { ackDeliveries, failDelivery } from '../queue/consumer.js'
import type { Delivery } from '../queue/message.js'
import type { SchemaName } from '../schema-name.js'
import type { Completer, FailOutcome, HandlerRun } from './completer.js'

/** An ack waiting to be written, and the handler run waiting to learn how it went. */
export interface PendingAck {
  delivery: Delivery
  resolve: (acked: boolean) => void
  reject: (error: unknown) => void
}

const MAX_BATCH = 1000

/**
 * How long acks may wait for a claim to carry them while claims are expected (a backlog): long
 * enough for the next claim of a busy worker, short against any lease.
 */
const RIDING_DELAY_MS = 100

/**
 * The lease-mode {@link Completer}: collects acks of finished handlers and writes them in one
 * fenced statement, at most `delayMs` after the first one arrives (or at once when `MAX_BATCH`
 * are waiting). A claim that starts meanwhile carries them instead (`take`, `settle`, `restore`).
 * Each caller learns whether its own delivery was acked or its lease was lost.
 */
export class AckBatcher implements Completer<Delivery> {
  readonly holdsConnection = false
  private pending: PendingAck[] = []
  private timer: NodeJS.Timeout | undefined
  private readonly flushes = new Set<Promise<void>>()
  /** True while the claim loop has a backlog: its next claim will carry the acks, so they wait for it. */
  private claimsExpected = false

  constructor(
    private readonly db: Executor,
    private readonly s: SchemaName,
    private readonly delayMs: number,
  ) {}

  /**
   * Runs the handler; once it resolves, the ack is queued. A delivery lost or given back while its
   * handler ran is not acked; the slot is free as soon as the handler settles.
   */
  async complete(run: HandlerRun<Delivery>): Promise<void> {
    await run.call(undefined)
    if (run.abandoned) throw new LeaseLostError([run.delivery.id])
    run.completing()
    if (!(await this.ack(run.delivery))) throw new LeaseLostError([run.delivery.id])
  }

  fail(delivery: Delivery, error: unknown): Promise<FailOutcome> {
    return failDelivery(this.db, this.s, delivery, error)
  }

  /** Resolves true when acked, false when the lease was lost; rejects when the statement failed. */
  ack(delivery: Delivery): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.pending.push({ delivery, resolve, reject })
      if (this.pending.length >= MAX_BATCH) this.flush()
      else this.timer ??= setTimeout(() => this.flush(), this.claimsExpected ? RIDING_DELAY_MS : this.delayMs)
    })
  }

  /**
   * Says whether a claim is expected soon (the claim loop has a backlog, or lingers before its
   * next claim). While one is, acks wait for it (up to RIDING_DELAY_MS) rather than flush after
   * `delayMs` in a statement of their own: at 2 ms, a busy worker wrote about as many ack
   * statements as claims, of 20 ids each.
   */
  expectClaims(expected: boolean): void {
    if (this.claimsExpected === expected) return
    this.claimsExpected = expected
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = setTimeout(() => this.flush(), expected ? RIDING_DELAY_MS : this.delayMs)
    }
  }

  /**
   * Hands over the acks waiting now, for a claim to carry (see `ackAndClaim`); the caller
   * reports the outcome with `settle`, or gives them back with `restore` if its statement failed.
   */
  take(): PendingAck[] {
    clearTimeout(this.timer)
    this.timer = undefined
    const batch = this.pending
    this.pending = []
    return batch
  }

  /** Tells each caller of a taken batch whether its delivery was acked. */
  settle(batch: readonly PendingAck[], ackedIds: readonly string[]): void {
    // Usually every one was acked (ids are unique in a batch): no set of ids to build.
    if (ackedIds.length === batch.length) {
      for (const p of batch) p.resolve(true)
      return
    }
    const acked = new Set(ackedIds)
    for (const p of batch) p.resolve(acked.has(p.delivery.id))
  }

  /** Puts a taken batch back, to be written on its own. */
  restore(batch: readonly PendingAck[]): void {
    if (batch.length === 0) return
    this.pending.unshift(...batch)
    this.flush()
  }

  /** Writes what is pending now and waits for every write under way. */
  async drain(): Promise<void> {
    this.flush()
    while (this.flushes.size > 0) await Promise.all(this.flushes)
  }

  private flush(): void {
    clearTimeout(this.timer)
    this.timer = undefined
    const batch = this.pending
    if (batch.length === 0) return
    this.pending = []
    const write = ackDeliveries(this.db, this.s, batch.map((p) => p.delivery)).then(
      (ids) => this.settle(batch, ids),
      (error: unknown) => {
        for (const p of batch) p.reject(error)
      },
    )
    this.flushes.add(write)
    void write.finally(() => this.flushes.delete(write))
  }
}
