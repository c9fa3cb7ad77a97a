import { EventEmitter } from 'node:events'
import type { Database } from '../db/database.js'
import { describeError } from '../describe-error.js'
import { LeaseLostError } from '../errors.js'
import type { Logger } from '../logger.js'
import type { WakeUps } from '../notify/wake-ups.js'
import { releaseDeliveries } from '../queue/consumer.js'
import { queueNameOf, type QueueRef } from '../queue/define-queue.js'
import type { Message } from '../queue/message.js'
import type { SchemaName } from '../schema-name.js'
import { inConsumerSpan } from '../tracing/consumer-span.js'
import { tracerProviderRegistered } from '../tracing/sdk-registered.js'
import { AckBatcher } from './ack-batcher.js'
import { ClaimLoop } from './claim-loop.js'
import { ConsumerLifecycle } from './consumer-lifecycle.js'
import type { Handler } from './handler.js'
import { HandlerRunner, type Held, type RunnerOptions } from './handler-runner.js'
import { LeaseKeeper, type HeldLease } from './lease-keeper.js'
import { MessageContext } from './message-context.js'
import { TransactionalAck } from './transactional-ack.js'
import type { WorkerEvents } from './worker-events.js'
import type { StopOptions, WorkerSettings } from './worker-options.js'

/** What a worker needs from its Postbox. */
export interface WorkerDeps {
  readonly db: Database
  readonly schema: SchemaName
  readonly wakeUps: WakeUps
  readonly logger: Logger
}

type Claimed<P> = Held<Message<P>, HeldLease>

/**
 * Runs a handler over one or more queues: claims in batches sized to free capacity, extends
 * leases while handlers run, acks in batches (fenced by lease), retries failures with the queue's
 * backoff, and stops gracefully. Created by `postbox.work()`.
 */
// Assembled from parts a stream consumer can share: a ClaimLoop claims, a HandlerRunner runs
// handlers and hands each outcome to a completer (AckBatcher, or TransactionalAck in transactional
// mode), a LeaseKeeper keeps the leases, and a ConsumerLifecycle starts and stops them in order.
export class Worker<P = unknown, Tx = unknown> extends EventEmitter<WorkerEvents> {
  private readonly names: readonly string[]
  private readonly keeper: LeaseKeeper
  private readonly runner: HandlerRunner<Message<P>, HeldLease>
  private readonly claims: ClaimLoop<P>
  private readonly lifecycle: ConsumerLifecycle<Claimed<P>>

  constructor(
    private readonly deps: WorkerDeps,
    queues: readonly QueueRef<P>[],
    handler: Handler<P, Tx>,
    settings: WorkerSettings,
  ) {
    super()
    const { db, schema } = deps
    this.names = queues.map(queueNameOf)
    const report = (error: unknown) => this.report(error)
    this.keeper = new LeaseKeeper(db, schema, report)
    const acks = settings.transactional ? undefined : new AckBatcher(db, schema, settings.ackDelayMs)
    const completer = acks ?? new TransactionalAck(db, schema)
    this.runner = new HandlerRunner<Message<P>, HeldLease>({
      concurrency: settings.concurrency,
      handlerTimeoutMs: settings.handlerTimeoutMs,
      completer,
      // The handler runs in a consumer span whose parent is the trace context the message carries;
      // without an OpenTelemetry SDK it is called directly (no closure, no promise of the span's).
      invoke: (run, tx) => {
        const ctx = new MessageContext<P, Tx>(run, tx as Tx | undefined, db, schema)
        if (!tracerProviderRegistered()) return handler(run.delivery, ctx)
        return inConsumerSpan(run.delivery, async () => handler(run.delivery, ctx))
      },
      // The runner's events are the worker's, under the same names, for messages of this worker's type.
      events: this as unknown as RunnerOptions<Message<P>, HeldLease>['events'],
      report,
      unhold: (held) => this.keeper.remove(held),
      vacated: () => this.claims.vacated(),
      // An acked or dead-lettered message frees its group, and no notification says so.
      finished: (message) => {
        if (message.groupKey !== null) this.claims.groupFreed()
      },
    })
    this.claims = new ClaimLoop<P>({
      db,
      schema,
      wakeUps: deps.wakeUps,
      queues,
      settings,
      runner: this.runner,
      riding: acks,
      hold: (message) => this.hold(message),
      report,
    })
    this.lifecycle = new ConsumerLifecycle<Claimed<P>>(
      {
        claims: this.claims,
        runner: this.runner,
        completer,
        keeper: this.keeper,
        giveBack: (entries) => this.giveBack(entries),
        report,
        warn: (message, error) => deps.logger.warn({ err: (error as Error).message }, message),
      },
      `Worker(${this.names.join(', ')})`,
      () => this.emit('stopped'),
    )
  }

  /** The queues this worker serves. */
  get queueNames(): readonly string[] {
    return this.names
  }

  /** Handlers running now. */
  get inFlight(): number {
    return this.runner.size
  }

  /** Starts claiming; called by `postbox.work()`. */
  start(): void {
    this.lifecycle.start()
  }

  /**
   * Stops claiming new messages; running handlers carry on. Resolves once a claim that was
   * already under way has finished, so no message is claimed after that.
   */
  pause(): Promise<void> {
    return this.lifecycle.pause()
  }

  /** Claims again after `pause()`. */
  resume(): void {
    this.lifecycle.resume()
  }

  /**
   * Stops the worker: no new claims, waits up to `timeout` (default 30s) for running handlers,
   * then aborts and releases what is left (visible again at once, its attempt still counted), and
   * flushes pending acks. Idempotent; never throws.
   */
  stop(options?: StopOptions): Promise<void> {
    return this.lifecycle.stop(options)
  }

  /** Releases claimed messages at once (visible again, attempt kept) and stops keeping their leases. */
  private async giveBack(entries: readonly Claimed<P>[]): Promise<void> {
    if (entries.length === 0) return
    for (const e of entries) this.keeper.remove(e.hold)
    const { db, schema } = this.deps
    await releaseDeliveries(db, schema, entries.map((e) => e.delivery)).catch((error: unknown) => this.report(error))
  }

  private report(error: unknown): void {
    if (this.listenerCount('error') > 0) this.emit('error', error)
    else this.deps.logger.error({ err: describeError(error) }, 'postbox: worker error')
  }

  /** Starts keeping a claimed message's lease; if it is lost, the handler (if running) is aborted. */
  private hold(message: Message<P>): HeldLease {
    const held = new MessageLease(message, this.leaseLost)
    this.keeper.add(held)
    return held
  }

  /** A kept lease turned out lost: abort its handler, or take it out of the buffer if not started. */
  private readonly leaseLost = (held: MessageLease<P>): void => {
    if (this.runner.lose(held, new LeaseLostError([held.id]))) return
    this.claims.drop(held)
    this.emit('leaseLost', held.message)
  }
}

/**
 * The lease of one claimed message, as the LeaseKeeper keeps it. A class, so that `onLost` is a
 * method rather than a closure per message.
 */
class MessageLease<P> implements HeldLease {
  readonly id: string
  readonly lease: string
  readonly leaseMs: number
  expiresAt: number
  completing = false

  constructor(
    readonly message: Message<P>,
    private readonly lost: (held: MessageLease<P>) => void,
  ) {
    this.id = message.id
    this.lease = message.lease
    this.leaseMs = Math.max(1, message.leaseExpiresAt.getTime() - message.claimedAt.getTime())
    this.expiresAt = Date.now() + this.leaseMs
  }

  onLost(): void {
    this.lost(this)
  }
}
