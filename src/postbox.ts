import { EventEmitter } from 'node:events'
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import { kyselyDatabase, poolDatabase, type Database, type KyselyDatabaseLike, type PgPoolLike } from './db/database.js'
import type { Executor } from './db/executor.js'
import { StatementCoalescer } from './db/statement-coalescer.js'
import { executorFor, type TransactionLike } from './db/transaction.js'
import { withTypedErrors } from './db/typed-errors.js'
import { InvalidOptionsError } from './errors.js'
import { silentLogger, type Logger } from './logger.js'
import { peek, type PeekOptions, type PeekPage } from './inspect/peek.js'
import { PostboxMetrics } from './metrics/postbox-metrics.js'
import { migrate, type MigrateResult } from './migrate/migrator.js'
import { trackOpen } from './open-resources.js'
import { postboxOptionsSchema, type PostboxOptions } from './postbox-options.js'
import { selectActivity } from './queries/inspect.js'
import * as messages from './queries/messages.js'
import type { OutgoingEvent } from './queries/streams.js'
import { selectQueueStats, type QueueStatsRow } from './queries/queues.js'
import * as consumer from './queue/consumer.js'
import { queueNameOf, type QueueRef } from './queue/define-queue.js'
import type { Delivery, Message } from './queue/message.js'
import * as producer from './queue/producer.js'
import { QueueAdmin } from './queue/queue-admin.js'
import type { QueueInfo, QueueOptions } from './queue/queue-options.js'
import { batchOptionsSchema, sendOptionsSchema, type SendOptions } from './queue/send-options.js'
import { assertQueueName } from './queue-name.js'
import { schemaName, type SchemaName } from './schema-name.js'
import { parseOptions } from './validation.js'
import { BindingAdmin, type Binding, type BindOptions } from './routing/binding-admin.js'
import { publishBatchOptionsSchema, publishOptionsSchema, type PublishBatchOptions, type PublishItem, type PublishOptions, type PublishResult } from './routing/publish-options.js'
import * as publisher from './routing/publisher.js'
import { z } from 'zod'
import { Notifier } from './notify/notifier.js'
import { WakeUps } from './notify/wake-ups.js'
import type { PgClient } from './db/pg-client.js'
import type { Handler, TransactionalHandler } from './worker/handler.js'
import type { Worker } from './worker/worker.js'
import type { WorkerOptions } from './worker/worker-options.js'
import { WorkerRegistry } from './worker/worker-registry.js'
import { ScheduleAdmin } from './schedule/schedule-admin.js'
import type { ScheduleInfo, ScheduleOptions } from './schedule/schedule-options.js'
import { Scheduler, type SchedulerHandle } from './schedule/scheduler.js'
import * as appender from './streams/appender.js'
import { StreamAdmin } from './streams/stream-admin.js'
import type { StreamEvent } from './streams/stream-event.js'
import { readStream } from './streams/stream-reader.js'
import {
  appendBatchOptionsSchema,
  appendOptionsSchema,
  type AppendItem,
  type AppendOptions,
  type ReadStreamOptions,
  type SeekTo,
  type StreamInfo,
  type StreamOptions,
} from './streams/stream-options.js'
import { pruneStreams, selectStreamStats } from './queries/streams-groups.js'
import { streamStats, type StreamStats } from './streams/stream-stats.js'
import { consumeOptionsSchema, type ConsumeOptions, type StreamHandler } from './streams/consume-options.js'
import { StreamConsumer } from './streams/stream-consumer.js'
import { assertStreamName } from './streams/stream-name.js'

/** Events of a Postbox: the state of its LISTEN connection. */
export interface PostboxEvents {
  notifierConnected: []
  notifierLost: [error: unknown]
}

/** Queue counts, as the `queue_stats` view has them; ages in milliseconds. */
export interface QueueStats {
  queue: string
  ready: number
  delayed: number
  inFlight: number
  dead: number
  total: number
  oldestReadyAgeMs: number | null
  retained: number
  /** Whether the queue is paused (`pauseQueue`). */
  paused: boolean
}

function stats(row: QueueStatsRow): QueueStats {
  return {
    queue: row.queue,
    ready: row.ready,
    delayed: row.delayed,
    inFlight: row.in_flight,
    dead: row.dead,
    total: row.total,
    oldestReadyAgeMs: row.oldest_ready_age_ms,
    retained: row.retained,
    paused: row.paused,
  }
}

/**
 * Send statements under way at once before further sends wait to share the next one. With 10
 * callers on 2 cores (npm run bench), 1, 2 and 3 in flight did about the same, 4 a little less,
 * and 10 (one statement per send) about half as much.
 */
const SEND_STATEMENTS_IN_FLIGHT = 2

const redriveOptionsSchema = z.strictObject({ to: z.string().optional(), max: z.number().int().min(1).optional() })
const txOnlySchema = z.strictObject({ tx: z.custom<TransactionLike>((v) => typeof v === 'object' && v !== null).optional() })

/**
 * A postbox client: queues, sending (optionally inside your transaction), receiving under a
 * lease, and completing deliveries. One per process is enough; it is safe to share.
 *
 * @example
 * const postbox = new Postbox({ connectionString: process.env.DATABASE_URL })
 * await postbox.migrate()
 * await postbox.createQueue('emails')
 * await postbox.send('emails', { to: 'a@b.c' })
 */
export class Postbox extends EventEmitter<PostboxEvents> {
  /** The validated schema postbox lives in. */
  readonly schema: SchemaName
  /** Where postbox's own statements run (the pool), with typed errors. */
  protected readonly db: Database
  protected readonly logger: Logger
  private readonly ownedPool: pg.Pool | undefined
  private readonly queues: QueueAdmin
  private readonly bindings: BindingAdmin
  private readonly streams: StreamAdmin
  private readonly consumers = new Set<StreamConsumer<never, never>>()
  private readonly untrack: () => void
  private closing: Promise<void> | undefined
  private readonly closeSignal = new AbortController()
  private readonly pollMs: number
  private readonly notifier: Notifier | undefined
  private readonly wakeUps: WakeUps
  private readonly workers: WorkerRegistry
  /** Sends outside a transaction, sharing statements while others are under way (batchSends). */
  private readonly sends: StatementCoalescer<messages.OutgoingMessage, producer.SendResult> | undefined
  /** Appends outside a transaction, sharing statements the same way (batchSends). */
  private readonly appends: StatementCoalescer<OutgoingEvent, appender.AppendResult> | undefined
  /** Prometheus metrics: this process's sends and handler outcomes, and the queues' counts. */
  private readonly telemetry: PostboxMetrics
  private readonly schedules: ScheduleAdmin
  /** Fires due schedules while startScheduler() callers or running workers take part. */
  protected readonly scheduler: Scheduler
  private readonly scheduleWithWorkers: boolean

  constructor(options: PostboxOptions) {
    super()
    const o = parseOptions(postboxOptionsSchema, options, 'Postbox options')
    this.schema = schemaName(o.schema ?? 'postbox')
    this.logger = (o.logger as Logger | undefined) ?? silentLogger
    this.ownedPool = o.connectionString
      ? new pg.Pool({ connectionString: o.connectionString, max: o.poolSize ?? 10 })
      : undefined
    // An idle client's error (the server restarted) must not crash the app; the pool replaces it.
    this.ownedPool?.on('error', (error) => this.logger.warn({ err: error.message }, 'postbox: idle pool client failed'))
    const pool = (this.ownedPool ?? o.pool) as PgPoolLike | undefined
    const prepared = o.preparedStatements ?? true
    const onUnsupported = (error: Error) =>
      this.logger.warn({ err: error.message }, 'postbox: the pool cannot keep prepared statements (a pooler in transaction mode?); using unnamed statements from now on')
    const base = pool ? poolDatabase(pool, { prepared, onUnsupported }) : kyselyDatabase(o.kysely as KyselyDatabaseLike)
    const transactions = o.kysely ? kyselyDatabase(o.kysely as KyselyDatabaseLike) : base
    const typed = withTypedErrors(base)
    this.db = {
      query: typed.query,
      transaction: (fn) => transactions.transaction((tx, handle) => fn(withTypedErrors(tx), handle)),
    }
    this.queues = new QueueAdmin(this.db, this.schema)
    this.bindings = new BindingAdmin(this.db, this.schema)
    this.streams = new StreamAdmin(this.db, this.schema)
    this.sends = o.batchSends === false ? undefined : new StatementCoalescer(producer.sendStatements(this.db, this.schema), SEND_STATEMENTS_IN_FLIGHT)
    this.appends = o.batchSends === false ? undefined : new StatementCoalescer(appender.appendStatements(this.db, this.schema), SEND_STATEMENTS_IN_FLIGHT)
    this.pollMs = o.pollInterval ?? 2_000
    const listenConnection = o.listenConnectionString ?? o.connectionString ?? poolConnectionString(o.pool)
    if (o.wakeups !== 'poll' && listenConnection) {
      this.notifier = new Notifier({ connectionString: listenConnection, schema: this.schema, logger: this.logger })
      this.notifier.on('connected', () => this.emit('notifierConnected'))
      this.notifier.on('lost', (error) => this.emit('notifierLost', error))
    }
    this.wakeUps = new WakeUps(this.db, this.schema, this.notifier, randomUUID(), this.pollMs, this.logger)
    const workerDeps = { db: this.db, schema: this.schema, wakeUps: this.wakeUps, logger: this.logger }
    // Transactional handlers hold connections of the pool their transactions run on; postbox can
    // count them only on a pg pool it knows the size of (not behind a Kysely instance).
    const handlerPoolSize = o.kysely ? null : this.ownedPool ? (o.poolSize ?? 10) : poolMax(o.pool)
    this.workers = new WorkerRegistry(workerDeps, handlerPoolSize, this.pollMs, () => this.notifier?.start())
    this.telemetry = new PostboxMetrics({
      queueStats: () => this.stats(),
      streamLag: async () =>
        (await this.streamStats()).flatMap((r) => (r.group === null || r.lag === null ? [] : [{ stream: r.stream, group: r.group, partition: r.partition, lag: r.lag }])),
    })
    this.schedules = new ScheduleAdmin(this.db, this.schema)
    this.scheduler = new Scheduler(this.db, this.schema, this.logger)
    this.scheduleWithWorkers = o.scheduleWithWorkers ?? true
    this.untrack = trackOpen('postbox', `Postbox(schema ${this.schema.name})`)
  }

  /**
   * Starts the LISTEN connection now rather than on first use, and waits until it is up. Optional:
   * `work()` and `receive({ wait })` start it themselves.
   */
  async listen(): Promise<void> {
    this.notifier?.start()
    await this.notifier?.ready()
  }

  /** Installs or upgrades the schema. Idempotent and safe when many processes call it at once. */
  migrate(): Promise<MigrateResult> {
    return migrate(this.db, this.schema)
  }

  /** Creates a queue (and its dead letter) if it does not exist; an existing queue is returned unchanged. */
  createQueue(name: string, options?: QueueOptions): Promise<QueueInfo> {
    return this.queues.create(name, options)
  }

  /** Changes the given settings of a queue; the rest stay as they are. */
  updateQueue(name: string, options: QueueOptions): Promise<QueueInfo> {
    return this.queues.update(name, options)
  }

  /** Deletes a queue; refuses a non-empty one unless `{ purge: true }`. */
  deleteQueue(name: string, options?: { purge?: boolean }): Promise<void> {
    return this.queues.delete(name, options)
  }

  /** A queue's settings, or null when there is no such queue. */
  getQueue(name: string): Promise<QueueInfo | null> {
    return this.queues.get(name)
  }

  /** Every queue's settings, by name. */
  listQueues(): Promise<QueueInfo[]> {
    return this.queues.list()
  }

  /**
   * Pauses a queue: sends are still accepted, and no consumer claims anything from it (in any
   * process) until `resumeQueue`. Messages in flight finish as usual. Returns false when it was
   * paused already. Shown as `paused` in `stats()` and the `queue_stats` view.
   *
   * @example
   * await postbox.pauseQueue('scrape')   // the site asked us to back off
   */
  pauseQueue(name: string): Promise<boolean> {
    return this.queues.pause(name)
  }

  /** Resumes a paused queue; its idle consumers are woken at once. Returns false when it was not paused. */
  resumeQueue(name: string): Promise<boolean> {
    return this.queues.resume(name)
  }

  /** Deletes every message of a queue (waiting, delayed and in flight) and keeps the queue; returns how many. */
  purgeQueue(name: string): Promise<number> {
    return this.queues.purge(name)
  }

  /**
   * Reads a queue's messages in delivery order without claiming them (no lock, no lease or
   * attempt changed); `{ dead: true }` reads its dead letters. Pages with `after: page.next`.
   */
  peek(queue: string, options?: PeekOptions): Promise<PeekPage> {
    return peek(this.db, this.schema, queue, options)
  }

  /**
   * The Prometheus text exposition of this Postbox's metrics, for an app's own `/metrics`: queue
   * counts read from the database now (`queueStats: false` skips that query), and this process's
   * sends, handler outcomes and durations. Names and alerts: docs/operations.md.
   *
   * @example
   * res.setHeader('content-type', 'text/plain; version=0.0.4').end(await postbox.metrics())
   */
  metrics(options?: { queueStats?: boolean }): Promise<string> {
    return this.telemetry.text(options)
  }

  /**
   * The database clock and the last message id drawn. Every send draws one id (a send that
   * rolled back too), so two readings give the send rate of all queues together; the dashboard
   * samples it.
   */
  async activity(): Promise<{ at: Date; lastMessageId: string | null }> {
    const row = await selectActivity(this.db, this.schema)
    return { at: row.at, lastMessageId: row.last_id }
  }

  /** Counts per queue from the `queue_stats` view: one queue, or all. */
  async stats(queue?: string): Promise<QueueStats[]> {
    return (await selectQueueStats(this.db, this.schema, queue === undefined ? null : assertQueueName(queue))).map(stats)
  }

  /**
   * Sends a message. With `tx` it is written in your transaction and exists if and only if that
   * transaction commits; without, it is committed at once. For a typed queue (`defineQueue`) the
   * payload's type is the queue's: it is checked against it, not inferred from it.
   */
  async send<P>(queue: QueueRef<P>, payload: NoInfer<P>, options?: SendOptions): Promise<producer.SendResult> {
    const { tx, ...rest } = options === undefined ? {} : parseOptions(sendOptionsSchema, options, 'send options')
    const name = queueNameOf(queue)
    const result = tx === undefined && this.sends
      ? await this.sends.write(name, producer.outgoing(queue, payload, rest))
      : await producer.send(this.executor(tx), this.schema, queue, payload, rest)
    this.telemetry.countSent(name, 1)
    return result
  }

  /**
   * Sends many messages to one queue in one statement; returns their ids in order. An item is a
   * payload, or `{ payload, delay?, priority?, dedupeKey?, groupKey?, headers?, availableAt? }`.
   */
  async sendBatch<P>(queue: QueueRef<P>, items: readonly NoInfer<P | producer.BatchItem<P>>[], options?: { tx?: TransactionLike }): Promise<string[]> {
    const { tx } = parseOptions(batchOptionsSchema, options, 'sendBatch options')
    const ids = await producer.sendBatch(this.executor(tx), this.schema, queue, items)
    if (ids.length > 0) this.telemetry.countSent(queueNameOf(queue), ids.length)
    return ids
  }

  /**
   * Subscribes a queue to a routing-key pattern (RabbitMQ topic rules: `*` is one word, `#` zero or
   * more). Idempotent; binding the same queue and pattern again replaces its filter. Returns true
   * when the binding was created or changed.
   *
   * @example
   * await postbox.bind('audit', 'orders.#', { filter: { region: ['eu', 'us'] } })
   */
  bind(queue: QueueRef<unknown>, pattern: string, options?: BindOptions): Promise<boolean> {
    return this.bindings.bind(queue, pattern, options)
  }

  /** Removes a binding; returns true when there was one. Deleting a queue removes its bindings. */
  unbind(queue: QueueRef<unknown>, pattern: string): Promise<boolean> {
    return this.bindings.unbind(queue, pattern)
  }

  /** Every binding (or one queue's), by queue then pattern: `[{ queue, pattern, filter }]`. */
  listBindings(options?: { queue?: string }): Promise<Binding[]> {
    return this.bindings.list(options)
  }

  /** The queues a publish with this routing key (and headers) would reach now: a dry run. */
  matchingQueues(routingKey: string, options?: { headers?: Record<string, string> }): Promise<string[]> {
    return this.bindings.matchingQueues(routingKey, options)
  }

  /**
   * Publishes a message to every queue bound by a matching pattern, one copy per queue, in one
   * statement: inside `tx` every copy exists if and only if your transaction commits; without, at
   * once. Returns the queues reached and the id in each. A publish that matches nothing is counted
   * (`unroutedStats()`), or with `unrouted: 'error'` throws `UnroutableError`.
   *
   * @example
   * const { queues, ids } = await postbox.publish('orders.eu.placed', { orderId: 42 }, { tx, headers: { region: 'eu' } })
   */
  async publish(routingKey: string, payload: unknown, options?: PublishOptions): Promise<PublishResult> {
    const { tx, ...rest } = parseOptions(publishOptionsSchema, options, 'publish options')
    const result = await publisher.publish(this.executor(tx), this.schema, routingKey, payload, rest)
    this.countPublished(result)
    return result
  }

  /** Publishes many messages in one statement, each routed by its own key; returns what each reached, in order. */
  async publishBatch(items: readonly PublishItem[], options?: PublishBatchOptions): Promise<PublishResult[]> {
    const { tx, unrouted } = parseOptions(publishBatchOptionsSchema, options, 'publishBatch options')
    const results = await publisher.publishBatch(this.executor(tx), this.schema, items, unrouted)
    for (const result of results) this.countPublished(result)
    return results
  }

  /** How many publishes reached no queue (committed ones), and the latest one's key and time. */
  unroutedStats(): Promise<publisher.UnroutedStats> {
    return publisher.unroutedStats(this.db, this.schema)
  }

  /**
   * Creates a stream, a retained log that consumer groups read at their own offsets, if it does
   * not exist; an existing stream is returned unchanged.
   *
   * @example
   * await postbox.createStream('orders', { partitions: 4, retention: '7d' })
   */
  createStream(name: string, options?: StreamOptions): Promise<StreamInfo> {
    return this.streams.create(name, options)
  }

  /** A stream's settings, or null when there is no such stream. */
  getStream(name: string): Promise<StreamInfo | null> {
    return this.streams.get(name)
  }

  /** Every stream's settings, by name. */
  listStreams(): Promise<StreamInfo[]> {
    return this.streams.list()
  }

  /** Deletes a stream with its events, groups and offsets; returns false when there was none. */
  deleteStream(name: string): Promise<boolean> {
    return this.streams.delete(name)
  }

  /**
   * Appends an event to a stream. With `tx` it is written in your transaction and exists if and
   * only if that transaction commits; without, it is committed at once, sharing a statement with
   * the appends that arrive meanwhile (see `batchSends`). The key picks the
   * partition (the same key, the same partition). The event gets its offset shortly after it
   * commits, after every event that became visible before it.
   *
   * @example
   * const { id, partition } = await postbox.append('orders', { orderId: 42 }, { key: 'customer:7', tx })
   */
  async append(stream: string, payload: unknown, options?: AppendOptions): Promise<appender.AppendResult> {
    const { tx, ...rest } = parseOptions(appendOptionsSchema, options, 'append options')
    return tx === undefined && this.appends
      ? this.appends.write(assertStreamName(stream), appender.outgoingEvent(payload, rest))
      : appender.append(this.executor(tx), this.schema, stream, payload, rest)
  }

  /** Appends many events in one statement; an item is a payload or `{ payload, key?, headers? }`. */
  async appendBatch(stream: string, items: readonly (unknown | AppendItem)[], options?: { tx?: TransactionLike }): Promise<appender.AppendResult[]> {
    const { tx } = parseOptions(appendBatchOptionsSchema, options, 'appendBatch options')
    return appender.appendBatch(this.executor(tx), this.schema, stream, items)
  }

  /**
   * Reads one partition of a stream after an offset, without a group: ad-hoc replay.
   *
   * @example
   * const events = await postbox.readStream('orders', { partition: 0, after: '41', limit: 100 })
   */
  readStream<P = unknown>(stream: string, options?: ReadStreamOptions): Promise<StreamEvent<P>[]> {
    return readStream<P>(this.db, this.schema, stream, options)
  }

  /**
   * Moves a group's committed offsets: to the earliest retained event, past the newest, to the
   * first event stamped at or after a time, or, for one partition, to just before an offset.
   * Members reading meanwhile are fenced and continue from there. Returns the partitions moved.
   *
   * @example
   * await postbox.seek('orders', 'billing', 'earliest')   // replay everything retained
   */
  seek(stream: string, group: string, to: SeekTo): Promise<number> {
    return this.streams.seek(stream, group, to)
  }

  /**
   * Reads a stream as a member of a consumer group. Every group gets every event; within a group
   * each partition is read by one member at a time, in offset order, and members share the
   * partitions by themselves as they join, stop or die (after `sessionTimeout`, default 10s). The
   * offset is committed once per batch, fenced: a member that lost a partition cannot commit for
   * it. With `transactional: true` the handler gets `ctx.tx`, and its writes commit with the
   * offset or not at all; each partition's batch then holds a pool connection while it runs.
   *
   * @example
   * const consumer = postbox.consume('orders', 'billing', async (event, ctx) => {
   *   await ctx.tx.query('INSERT INTO invoices (order_id) VALUES ($1)', [event.payload.orderId])
   * }, { from: 'earliest', transactional: true })
   * await consumer.stop()
   */
  consume<P = unknown, Tx = PgClient>(stream: string, group: string, handler: StreamHandler<P, Tx>, options?: ConsumeOptions): StreamConsumer<P, Tx> {
    if (this.closing) throw new InvalidOptionsError('this Postbox is closed')
    assertStreamName(stream)
    assertStreamName(group, 'group')
    if (typeof handler !== 'function') throw new InvalidOptionsError('consume needs a handler function')
    const o = parseOptions(consumeOptionsSchema, options, 'consume options')
    const sessionTimeoutMs = o.sessionTimeout ?? 10_000
    const consumer = new StreamConsumer<P, Tx>(
      { db: this.db, schema: this.schema, wakeUps: this.wakeUps, logger: this.logger },
      stream,
      group,
      handler,
      {
        from: o.from ?? 'earliest',
        transactional: o.transactional ?? false,
        concurrency: o.concurrency ?? 4,
        batchSize: o.batchSize ?? 100,
        sessionTimeoutMs,
        heartbeatMs: o.heartbeatInterval ?? Math.max(1, Math.floor(sessionTimeoutMs / 3)),
        pollMs: o.pollInterval ?? this.pollMs,
        retryDelayMs: o.retryDelay ?? 1_000,
        memberId: o.memberId ?? randomUUID(),
      },
    )
    const tracked = consumer as unknown as StreamConsumer<never, never>
    this.consumers.add(tracked)
    consumer.once('stopped', () => this.consumers.delete(tracked))
    this.notifier?.start()
    consumer.start()
    return consumer
  }

  /**
   * Head, committed offset and lag per stream, group and partition (the `stream_stats` view).
   */
  async streamStats(stream?: string): Promise<StreamStats[]> {
    return (await selectStreamStats(this.db, this.schema, stream === undefined ? null : stream)).map(streamStats)
  }

  /**
   * Applies streams' retention: drops every segment of events older than its stream's retention,
   * whole (no row-by-row delete). Running consumers call it about once a minute; returns how many
   * segments it dropped. `now` stands in for the database clock (tests).
   */
  pruneStreams(options?: { now?: Date }): Promise<number> {
    return pruneStreams(this.db, this.schema, options?.now ?? null)
  }

  /**
   * Claims up to `max` ready messages under a lease (visibility timeout). With `wait`, a long
   * poll: returns as soon as a message is available, or empty after `wait`.
   */
  async receive<P>(queue: QueueRef<P>, options?: consumer.ReceiveOptions): Promise<Message<P>[]> {
    const o = parseOptions(consumer.receiveOptionsSchema, options, 'receive options')
    const name = queueNameOf(queue)
    let got = await consumer.claim(this.db, this.schema, queue, o.max ?? 1, o.visibilityTimeout ?? null)
    if (got.length > 0 || !o.wait) return got
    this.notifier?.start()
    const deadline = Date.now() + o.wait
    const signal = this.closeSignal.signal
    const recheck = async () => (got = await consumer.claim(this.db, this.schema, queue, o.max ?? 1, o.visibilityTimeout ?? null)).length > 0
    for (let round = 0; Date.now() < deadline && !signal.aborted; round++) {
      if (await this.wakeUps.wait([name], deadline - Date.now(), signal, recheck, round) || await recheck()) return got
    }
    return []
  }

  /**
   * Runs `handler` for messages of one queue or several. Leases are extended while it runs; a
   * resolved handler acks, a thrown error retries with the queue's backoff (`NonRetryableError`
   * dead-letters at once). With `transactional: true` the handler gets `ctx.tx`, and the ack
   * commits in that same transaction; each running handler then holds a pool connection, so the
   * pool must have room for `concurrency` plus 2 (see {@link WorkerOptions.transactional}).
   *
   * @example
   * const worker = postbox.work('emails', async (message, ctx) => sendEmail(message.payload), { concurrency: 10 })
   * await worker.stop()
   */
  work<P, Tx = PgClient>(queues: QueueRef<P> | readonly QueueRef<P>[], handler: TransactionalHandler<P, Tx>, options: WorkerOptions & { transactional: true }): Worker<P, Tx>
  work<P, Tx = PgClient>(queues: QueueRef<P> | readonly QueueRef<P>[], handler: Handler<P, Tx>, options?: WorkerOptions): Worker<P, Tx>
  work<P, Tx>(queues: QueueRef<P> | readonly QueueRef<P>[], handler: Handler<P, Tx> | TransactionalHandler<P, Tx>, options?: WorkerOptions): Worker<P, Tx> {
    if (this.closing) throw new InvalidOptionsError('this Postbox is closed')
    // A transactional handler always gets its `tx`, so it is a Handler whose context has one.
    const worker = this.workers.start(queues, handler as Handler<P, Tx>, options)
    this.telemetry.observe(worker as unknown as Worker<never, never>)
    if (this.scheduleWithWorkers) {
      const part = this.scheduler.join()
      worker.once('stopped', () => void part.stop())
    }
    return worker
  }

  /**
   * Creates or replaces a schedule: on every tick of `cron`, read in `timezone` (default UTC),
   * one message goes to `queue`, with the headers `postbox-schedule` and `postbox-fire-at`. Each
   * tick fires once however many processes take part. Replacing a schedule with the same
   * expression and time zone keeps its next tick, so declaring schedules at every start is safe.
   *
   * @example
   * await postbox.schedule('nightly-report', { cron: '0 3 * * *', timezone: 'Europe/Paris', queue: 'reports', missed: 'latest' })
   */
  async schedule<P>(name: string, options: ScheduleOptions<NoInfer<P>> & { queue: QueueRef<P> }): Promise<ScheduleInfo> {
    const info = await this.schedules.schedule(name, options as ScheduleOptions)
    this.scheduler.poke()
    return info
  }

  /** Deletes a schedule; returns true when there was one. Deleting a queue deletes its schedules. */
  unschedule(name: string): Promise<boolean> {
    return this.schedules.unschedule(name)
  }

  /** Every schedule, by name, with its next tick (from the database clock) and its last. */
  listSchedules(): Promise<ScheduleInfo[]> {
    return this.schedules.list()
  }

  /**
   * Makes this process fire due schedules until the returned handle is stopped (or the Postbox
   * closed). A Postbox with a running worker takes part anyway (unless `scheduleWithWorkers: false`);
   * this is for processes that run no worker.
   *
   * @example
   * const scheduler = postbox.startScheduler()
   * await scheduler.stop()
   */
  startScheduler(): SchedulerHandle {
    if (this.closing) throw new InvalidOptionsError('this Postbox is closed')
    return this.scheduler.join()
  }

  /** Acks one delivery or many (one statement), fenced by their leases; a lost lease throws `LeaseLostError`. */
  async ack(message: Delivery | readonly Delivery[], options?: { tx?: TransactionLike }): Promise<void> {
    const { tx } = parseOptions(txOnlySchema, options, 'ack options')
    return consumer.ack(this.executor(tx), this.schema, message)
  }

  /** Fails a delivery: it is retried after the backoff (or `delay`), or dead-lettered after its last attempt. */
  async nack(message: Delivery, options?: consumer.NackOptions): Promise<'retried' | 'dead' | 'dropped'> {
    return consumer.nack(this.executor(options?.tx as TransactionLike | undefined), this.schema, message, options)
  }

  /** Extends the lease of one delivery or many to `duration` from now. */
  async extend(message: Delivery | readonly Delivery[], duration: number | string): Promise<void> {
    return consumer.extend(this.db, this.schema, message, duration)
  }

  /** Moves dead messages back to work: to their original queue, or `to`. Returns how many moved. */
  async redrive(deadQueue: string, options?: { to?: string; max?: number }): Promise<number> {
    const o = parseOptions(redriveOptionsSchema, options, 'redrive options')
    return messages.redrive(this.db, this.schema, assertQueueName(deadQueue), o.to === undefined ? null : assertQueueName(o.to), o.max ?? null)
  }

  /** Deletes archived (acked, retained) messages older than their queue's retention. */
  pruneArchive(): Promise<number> {
    return messages.pruneArchive(this.db, this.schema)
  }

  /** Stops everything and, when postbox created the pool, ends its connections. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closeSignal.abort()
      await this.workers.stopAll()
      await this.scheduler.close()
      await Promise.all([...this.consumers].map((consumer) => consumer.stop()))
      // sends and appends made before close() are written, not cut off
      await Promise.all([this.sends?.drain(), this.appends?.drain()])
      await this.wakeUps.close().catch(() => {})
      await this.notifier?.stop()
      await this.ownedPool?.end().catch((error: Error) => this.logger.warn({ err: error.message }, 'postbox: closing the pool failed'))
      this.untrack()
    })()
    return this.closing
  }

  /** Counts the copies a publish wrote in `postbox_messages_sent_total`, per queue (not its duplicates). */
  private countPublished(result: PublishResult): void {
    for (const queue of result.queues) if (!result.duplicates.includes(queue)) this.telemetry.countSent(queue, 1)
  }

  protected executor(tx: TransactionLike | undefined): Executor {
    if (tx === undefined) return this.db
    if (this.closing) throw new InvalidOptionsError('this Postbox is closed')
    return withTypedErrors(executorFor(tx, this.db))
  }
}

/** The size of a pg Pool (`options.max`), or null for a pool that does not say. */
function poolMax(pool: unknown): number | null {
  const max = (pool as { options?: { max?: unknown } } | undefined)?.options?.max
  return typeof max === 'number' ? max : null
}

/** The settings of a pg Pool, to open the LISTEN connection with the same credentials. */
function poolConnectionString(pool: unknown): string | undefined {
  const options = (pool as { options?: { connectionString?: string } } | undefined)?.options
  return options?.connectionString
}
