import { EventEmitter } from 'node:events'
import { sleep } from '../background-loop.js'
import type { Database } from '../db/database.js'
import { toMilliseconds } from '../duration.js'
import { LeaseLostError, NonRetryableError } from '../errors.js'
import type { Logger } from '../logger.js'
import type { WakeUps } from '../notify/wake-ups.js'
import { trackOpen } from '../open-resources.js'
import * as m from '../queries/messages.js'
import { claim, claimedMessages, describeError, extend } from '../queue/consumer.js'
import { queueNameOf, type QueueRef } from '../queue/define-queue.js'
import type { Message } from '../queue/message.js'
import type { SchemaName } from '../schema-name.js'
import { inConsumerSpan } from '../tracing/consumer-span.js'
import { parseOptions } from '../validation.js'
import { AckBatcher } from './ack-batcher.js'
import type { Handler, HandlerContext } from './handler.js'
import { callWithTimeout } from './handler-timeout.js'
import { LazyAbort } from './lazy-abort.js'
import { LeaseKeeper, type HeldLease } from './lease-keeper.js'
import { ThroughputMeter } from './throughput-meter.js'
import type { WorkerEvents } from './worker-events.js'
import { stopOptionsSchema, type StopOptions } from './worker-options.js'

/** What a worker needs from its Postbox. */
export interface WorkerDeps {
  readonly db: Database
  readonly schema: SchemaName
  readonly wakeUps: WakeUps
  readonly logger: Logger
}

/** Settings after validation, durations in milliseconds. */
export interface WorkerSettings {
  concurrency: number
  transactional: boolean
  visibilityTimeoutMs: number | null
  handlerTimeoutMs: number | null
  pollMs: number
  ackDelayMs: number
  /**
   * Pause after a claim that emptied the queue. Measured (bench, 10 senders, a worker consuming):
   * claiming again at once made a claim per few messages; 3 ms cut Postgres CPU per message by
   * about a fifth and raised the senders' rate from 0.65x to 0.8x of the bare INSERT loop.
   */
  claimLingerMs: number
  /** Messages claimed ahead of free handlers, so claims come in batches; null sizes it by throughput. */
  prefetch: number | null
}

/** Auto prefetch holds about this much work: enough for batches, too little to hoard from other workers. */
const PREFETCH_WINDOW_S = 0.05

interface Running {
  readonly message: Message
  readonly controller: LazyAbort
  readonly held: HeldLease
  readonly done: Promise<void>
  lost: boolean
  released: boolean
  /** True until the handler settles; the slot is free again from then, while the ack is written. */
  occupying: boolean
}

const ERROR_BACKOFF_MS = [100, 250, 500, 1_000, 2_000, 5_000]

/**
 * Runs a handler over one or more queues: claims in batches sized to free capacity, extends
 * leases while handlers run, acks in batches (fenced by lease), retries failures with the queue's
 * backoff, and stops gracefully. Created by `postbox.work()`.
 */
export class Worker<P = unknown, Tx = unknown> extends EventEmitter<WorkerEvents> {
  private readonly queues: readonly QueueRef<P>[]
  private readonly names: readonly string[]
  private readonly running = new Set<Running>()
  private readonly acks: AckBatcher
  private readonly keeper: LeaseKeeper
  private readonly stopping = new AbortController()
  private pauseGate: { promise: Promise<void>; open: () => void } | undefined
  /** Resolvers of the fetch loop's wait for a freed slot or a finished claim. */
  private changeWaiters: (() => void)[] = []
  private loop: Promise<void> | undefined
  private stopped: Promise<void> | undefined
  private untrack: (() => void) | undefined
  private next = 0
  private occupied = 0
  /** Claims under way, and the room they have reserved. */
  private readonly claims = new Set<Promise<unknown>>()
  private reserved = 0
  /** Whether the last claim came back full: more is likely waiting, so claims may overlap. */
  private backlog = false
  /** Claimed messages waiting for a free handler, oldest first; their leases are kept. */
  private readonly buffer: { message: Message<P>; held: HeldLease }[] = []
  private readonly completions = new ThroughputMeter()

  constructor(
    private readonly deps: WorkerDeps,
    queues: readonly QueueRef<P>[],
    private readonly handler: Handler<P, Tx>,
    private readonly settings: WorkerSettings,
  ) {
    super()
    this.queues = queues
    this.names = queues.map(queueNameOf)
    this.acks = new AckBatcher(deps.db, deps.schema, settings.ackDelayMs)
    this.keeper = new LeaseKeeper(deps.db, deps.schema, (error) => this.report(error))
  }

  /** The queues this worker serves. */
  get queueNames(): readonly string[] {
    return this.names
  }

  /** Handlers running now. */
  get inFlight(): number {
    return this.running.size
  }

  /** Starts claiming; called by `postbox.work()`. */
  start(): void {
    if (this.loop) return
    this.untrack = trackOpen('worker', `Worker(${this.names.join(', ')})`)
    this.keeper.start()
    this.loop = this.fetchLoop()
  }

  /**
   * Stops claiming new messages; running handlers carry on. Resolves once a claim that was
   * already under way has finished, so no message is claimed after that.
   */
  async pause(): Promise<void> {
    if (!this.pauseGate) {
      let open = () => {}
      const promise = new Promise<void>((resolve) => (open = resolve))
      this.pauseGate = { promise, open }
    }
    await Promise.all(this.claims)
  }

  /** Claims again after `pause()`. */
  resume(): void {
    const gate = this.pauseGate
    this.pauseGate = undefined
    gate?.open()
  }

  /**
   * Stops the worker: no new claims, waits up to `timeout` (default 30s) for running handlers,
   * then aborts and releases what is left (visible again at once, its attempt still counted), and
   * flushes pending acks. Idempotent; never throws.
   */
  stop(options?: StopOptions): Promise<void> {
    this.stopped ??= this.shutdown(options).catch((error: unknown) => this.report(error))
    return this.stopped
  }

  private async shutdown(options: StopOptions | undefined): Promise<void> {
    let timeoutMs = 30_000
    try {
      timeoutMs = parseOptions(stopOptionsSchema, options, 'stop options').timeout ?? timeoutMs
    } catch (error) {
      this.deps.logger.warn({ err: (error as Error).message }, 'postbox: ignoring invalid stop options')
    }
    try {
      this.stopping.abort()
      this.resume()
      this.changed()
      await this.loop
      await Promise.all(this.claims) // a claim started before the stop lands in the buffer first
      // Buffered messages are not started during a stop; running handlers get their time.
      await this.giveBack(this.buffer.splice(0))
      // The timer is cancelled once the handlers are done, so it cannot keep the process alive.
      const finished = new AbortController()
      const all = Promise.all([...this.running].map((r) => r.done)).then(() => finished.abort())
      await Promise.race([all, sleep(timeoutMs, finished.signal)])
      finished.abort()
      await this.giveBack([...this.running].filter((r) => !r.released).map((r) => {
        r.released = true
        r.controller.abort(new Error('worker stopped'))
        return r
      }))
      await this.acks.drain()
    } finally {
      await this.keeper.stop()
      this.untrack?.()
      this.emit('stopped')
    }
  }

  /** Releases claimed messages at once (visible again, attempt kept) and stops keeping their leases. */
  private async giveBack(entries: readonly { message: Message; held: HeldLease }[]): Promise<void> {
    if (entries.length === 0) return
    for (const e of entries) this.keeper.remove(e.held)
    await m
      .release(this.deps.db, this.deps.schema, entries.map((e) => e.message.id), entries.map((e) => e.message.lease))
      .catch((error: unknown) => this.report(error))
  }

  private report(error: unknown): void {
    if (this.listenerCount('error') > 0) this.emit('error', error)
    else this.deps.logger.error({ err: describeError(error) }, 'postbox: worker error')
  }

  /**
   * Messages to hold beyond running handlers. Auto: about 50 ms of work at the current rate
   * (measured: claims of 10 at a time capped a no-op worker near 5k msg/s, batches of 100 ran
   * twice as fast), so slow handlers prefetch next to nothing and fast ones claim in batches.
   */
  private prefetch(): number {
    if (this.settings.prefetch !== null) return this.settings.prefetch
    return Math.min(1000, Math.max(1, Math.round(this.completions.perSecond() * PREFETCH_WINDOW_S)))
  }

  /** How many more messages may be claimed: free handlers plus the prefetch, less the buffer and claims under way. */
  private capacity(): number {
    return this.settings.concurrency + this.prefetch() - this.occupied - this.buffer.length - this.reserved
  }

  /**
   * Whether to claim now: when the buffer is empty and a handler is free, or when at least half
   * the room is free. Waiting for half keeps claims in batches instead of one message at a time.
   */
  private shouldClaim(): boolean {
    const room = this.capacity()
    if (room <= 0) return false
    return (this.buffer.length === 0 && this.occupied < this.settings.concurrency) ||
      room * 2 >= this.settings.concurrency + this.prefetch()
  }

  /** Starts handlers for buffered messages while handlers are free. */
  private dispatch(): void {
    while (this.occupied < this.settings.concurrency && this.buffer.length > 0) {
      const next = this.buffer.shift() as { message: Message<P>; held: HeldLease }
      this.begin(next.message, next.held)
    }
  }

  /** Frees the handler's slot once (when its handler settles), and wakes the fetch loop. */
  private vacate(entry: Running): void {
    if (!entry.occupying) return
    entry.occupying = false
    this.occupied--
    this.dispatch()
    if (this.shouldClaim()) this.changed()
  }

  /** Wakes the fetch loop when it waits for room or for a claim to finish. */
  private changed(): void {
    const waiters = this.changeWaiters
    this.changeWaiters = []
    for (const wake of waiters) wake()
  }

  private nextChange(): Promise<void> {
    return new Promise((resolve) => this.changeWaiters.push(resolve))
  }

  private async fetchLoop(): Promise<void> {
    const { signal } = this.stopping
    let idleRounds = 0
    let failures = 0
    while (!signal.aborted) {
      try {
        if (this.pauseGate) {
          await Promise.race([this.pauseGate.promise, sleep(60_000, signal)])
          continue
        }
        // With a backlog, a second claim may start while one is under way: one statement at a time
        // left Postgres's second core idle (pgbench: claim+ack at 0.63x a raw drain, a serial
        // worker at a third of that).
        if (!this.shouldClaim() || this.claims.size >= (this.backlog ? 2 : 1)) {
          await this.nextChange()
          continue
        }
        if (this.backlog) {
          void this.claimRound().catch((error: unknown) => {
            this.backlog = false
            this.report(error)
          })
          continue
        }
        if (await this.claimRound()) {
          idleRounds = 0
          // The claim emptied the queue: let a trickle gather for the next one (claimLinger).
          if (!this.backlog && this.settings.claimLingerMs > 0) await sleep(this.settings.claimLingerMs, signal)
        } else {
          const found = await this.deps.wakeUps.wait(this.names, this.settings.pollMs, signal, () => this.claimRound(), idleRounds)
          idleRounds = found ? 0 : idleRounds + 1
        }
        failures = 0
      } catch (error) {
        this.report(error)
        await sleep(ERROR_BACKOFF_MS[Math.min(failures++, ERROR_BACKOFF_MS.length - 1)] as number, signal)
      }
    }
  }

  /** Claims from each queue in turn while there is capacity; true if anything was claimed. */
  private async claimRound(): Promise<boolean> {
    let claimed = false
    for (let i = 0; i < this.queues.length && !this.stopping.signal.aborted && !this.pauseGate; i++) {
      const free = this.capacity()
      if (free <= 0) break
      const index = (this.next + i) % this.queues.length
      const ref = this.queues[index] as QueueRef<P>
      const want = Math.min(free, 1000)
      const claiming = this.claimFrom(ref, want)
      const tracked = claiming.catch(() => {})
      this.claims.add(tracked)
      this.reserved += want
      let messages: Message<P>[]
      try {
        messages = await claiming
      } finally {
        this.reserved -= want
        this.claims.delete(tracked)
        this.changed()
      }
      this.backlog = messages.length === want
      if (messages.length === 0) continue
      claimed = true
      for (const message of messages) this.buffer.push({ message, held: this.hold(message) })
      this.dispatch()
    }
    this.next = (this.next + 1) % this.queues.length
    return claimed
  }

  /**
   * Claims up to `want` messages. Acks waiting to be written ride along in the same statement
   * (one round trip fewer per claim for a busy worker); if the statement fails they are given
   * back to be written on their own.
   */
  private async claimFrom(ref: QueueRef<P>, want: number): Promise<Message<P>[]> {
    const { db, schema } = this.deps
    const riding = this.acks.take()
    if (riding.length === 0) return claim(db, schema, ref, want, this.settings.visibilityTimeoutMs)
    let claimed: Awaited<ReturnType<typeof m.ackAndReceive>>
    try {
      claimed = await m.ackAndReceive(
        db,
        schema,
        { ids: riding.map((p) => p.delivery.id), leases: riding.map((p) => p.delivery.lease) },
        queueNameOf(ref),
        want,
        this.settings.visibilityTimeoutMs,
      )
    } catch (error) {
      this.acks.restore(riding)
      throw error
    }
    this.acks.settle(riding, claimed.acked)
    return claimedMessages(db, schema, ref, claimed.rows)
  }

  /** Starts keeping a claimed message's lease; if it is lost, the handler (if running) is aborted. */
  private hold(message: Message<P>): HeldLease {
    const leaseMs = Math.max(1, message.leaseExpiresAt.getTime() - message.claimedAt.getTime())
    const held: HeldLease = {
      id: message.id,
      lease: message.lease,
      leaseMs,
      expiresAt: Date.now() + leaseMs,
      completing: false,
      onLost: () => {
        const running = [...this.running].find((r) => r.held === held)
        if (running) {
          running.lost = true
          running.controller.abort(new LeaseLostError([message.id]))
        } else {
          const index = this.buffer.findIndex((b) => b.held === held)
          if (index >= 0) this.buffer.splice(index, 1)
          this.emit('leaseLost', message)
        }
      },
    }
    this.keeper.add(held)
    return held
  }

  private begin(message: Message<P>, held: HeldLease): void {
    const controller = new LazyAbort()
    const entry = { message, controller, held, lost: false, released: false, occupying: true } as Running & { done: Promise<void> }
    this.occupied++
    this.running.add(entry)
    this.emit('received', message)
    entry.done = this.handle(entry as Running).finally(() => {
      this.keeper.remove(entry.held)
      this.running.delete(entry)
      this.vacate(entry)
    })
  }

  private context(entry: Running, tx: unknown): HandlerContext<Tx> {
    return {
      get signal() {
        return entry.controller.signal
      },
      tx: tx as Tx | undefined,
      extend: async (duration) => {
        await extend(this.deps.db, this.deps.schema, entry.message, duration)
        entry.held.expiresAt = Date.now() + (toMilliseconds(duration) ?? 0)
      },
    }
  }

  /** Runs the handler; in transactional mode inside the transaction that acks. */
  private async handle(entry: Running): Promise<void> {
    const { message } = entry
    const started = Date.now()
    try {
      if (this.settings.transactional) {
        await this.deps.db.transaction(async (tx, handle) => {
          await this.invoke(entry, handle, false)
          entry.held.completing = true
          const acked = await m.ack(tx, this.deps.schema, [message.id], [message.lease])
          if (acked.length === 0) throw new LeaseLostError([message.id])
        })
      } else {
        await this.invoke(entry, undefined, true).finally(() => this.vacate(entry))
        if (entry.lost || entry.released) throw new LeaseLostError([message.id])
        entry.held.completing = true
        if (!(await this.acks.ack(message))) throw new LeaseLostError([message.id])
      }
      this.completions.record()
      this.emit('completed', message, { durationMs: Date.now() - started })
    } catch (error) {
      if (error instanceof LeaseLostError || entry.lost) {
        if (!entry.released) this.emit('leaseLost', message)
        return
      }
      if (entry.released) return
      this.vacate(entry)
      await this.fail(message, error)
    }
  }

  /** Calls the handler under the worker's handler timeout (see {@link callWithTimeout}). */
  private invoke(entry: Running, tx: unknown, race: boolean): Promise<void> {
    const call = () => this.handler(entry.message as Message<P>, this.context(entry, tx))
    return inConsumerSpan(entry.message, () => callWithTimeout(call, entry.controller, this.settings.handlerTimeoutMs, race))
  }

  private async fail(message: Message, error: unknown): Promise<void> {
    this.emit('failed', message, error)
    const outcome = await m
      .nack(this.deps.db, this.deps.schema, {
        id: message.id,
        lease: message.lease,
        delayMs: null,
        error: describeError(error),
        dead: error instanceof NonRetryableError,
      })
      .catch((nackError: unknown) => {
        this.report(nackError)
        return 'unknown' as const
      })
    if (outcome === null) this.emit('leaseLost', message)
    else if (outcome === 'retried') this.emit('retried', message, error)
    else if (outcome !== 'unknown') this.emit('deadLettered', message, error)
  }
}
