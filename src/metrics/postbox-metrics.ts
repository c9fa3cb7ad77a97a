import { Counter, Gauge, Histogram, Registry, type HistogramConfiguration } from 'prom-client'
import type { QueueStats } from '../postbox.js'
import type { Message } from '../queue/message.js'
import type { WorkerEvents } from '../worker/worker-events.js'
import { ProcessTally } from './process-tally.js'

/** One stream partition's lag behind its head, for one consumer group. */
export interface StreamLagSample {
  stream: string
  group: string
  partition: number
  lag: number
}

/** Where the gauges read their values when scraped. */
export interface MetricsSources {
  /** Counts per queue (the `queue_stats` view). */
  queueStats(): Promise<QueueStats[]>
  /**
   * Lag per stream, group and partition. Streams do not exist yet: when they do, their module
   * provides this, and `postbox_stream_lag` gets its values; until then the gauge is empty.
   */
  streamLag?(): Promise<StreamLagSample[]>
}

/** The part of a Worker these metrics listen to. */
export interface ObservableWorker {
  on<E extends keyof WorkerEvents>(event: E, listener: (...args: WorkerEvents[E]) => void): unknown
}

/** Handler durations, seconds: from 1 ms (a no-op handler with its ack) to a minute. */
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

const QUEUE_STATES = ['ready', 'delayed', 'in_flight', 'dead'] as const

/**
 * The Prometheus metrics of one Postbox, in a registry of its own (not prom-client's global
 * one), so two Postboxes in one process, or an app's own metrics, never collide. Counters count
 * what this process did: messages it sent, and the outcomes and durations of the handlers its
 * workers ran. Gauges are read from the database when scraped, so they describe every process.
 */
export class PostboxMetrics {
  /** The registry; an app may merge it with its own (`Registry.merge`). */
  readonly registry = new Registry()
  private readonly queueMessages: Gauge<'queue' | 'state'>
  private readonly oldestReadyAge: Gauge<'queue'>
  private readonly streamLag: Gauge<'stream' | 'group' | 'partition'>
  /** What this process counted; the counters and the histogram read it when scraped. */
  private readonly tally = new ProcessTally(DURATION_BUCKETS)

  constructor(private readonly sources: MetricsSources) {
    const registers = [this.registry]
    this.queueMessages = new Gauge({
      name: 'postbox_queue_messages',
      help: 'Messages per queue and state (ready, delayed, in_flight, and dead: this queue\'s messages in its dead letter), read from queue_stats when scraped.',
      labelNames: ['queue', 'state'],
      registers,
    })
    this.oldestReadyAge = new Gauge({
      name: 'postbox_queue_oldest_ready_age_seconds',
      help: 'How long the oldest ready message of the queue has waited, in seconds (0 when none is ready).',
      labelNames: ['queue'],
      registers,
    })
    const tally = this.tally
    new Counter({
      name: 'postbox_messages_sent_total',
      help: 'Messages this process sent (send and sendBatch), counted when the statement succeeded.',
      labelNames: ['queue'],
      registers,
      collect() {
        this.reset()
        for (const [queue, count] of tally.sent) this.inc({ queue }, count)
      },
    })
    new Counter({
      name: 'postbox_messages_processed_total',
      help: 'Deliveries this process\'s workers finished, by outcome: completed, retried, dead_lettered, lease_lost.',
      labelNames: ['queue', 'outcome'],
      registers,
      collect() {
        this.reset()
        for (const { queue, outcome, count } of tally.processed.values()) this.inc({ queue, outcome }, count)
      },
    })
    new TalliedHistogram(tally, {
      name: 'postbox_handler_duration_seconds',
      help: 'How long handlers ran in this process, in seconds, from start to their ack (completed) or error (failed).',
      labelNames: ['queue'],
      buckets: DURATION_BUCKETS,
      registers,
    })
    this.streamLag = new Gauge({
      name: 'postbox_stream_lag',
      help: 'Events a consumer group has yet to read, per stream partition.',
      labelNames: ['stream', 'group', 'partition'],
      registers,
    })
  }

  /** Counts `count` messages sent to `queue` by this process. */
  countSent(queue: string, count: number): void {
    this.tally.countSent(queue, count)
  }

  /**
   * Counts a worker's outcomes and handler durations, from its events. A `completed` event
   * brings the worker's own duration (handler plus ack); a failed handler is timed from its
   * `received` event to its `failed` one.
   */
  observe(worker: ObservableWorker): void {
    const started = new WeakMap<Message, number>()
    worker.on('received', (message) => started.set(message, performance.now()))
    worker.on('completed', (message, info) => {
      started.delete(message)
      this.tally.observeDuration(message.queue, info.durationMs / 1000)
      this.tally.countProcessed(message.queue, 'completed')
    })
    worker.on('failed', (message) => {
      const start = started.get(message)
      started.delete(message)
      if (start !== undefined) this.tally.observeDuration(message.queue, (performance.now() - start) / 1000)
    })
    worker.on('retried', (message) => this.tally.countProcessed(message.queue, 'retried'))
    worker.on('deadLettered', (message) => this.tally.countProcessed(message.queue, 'dead_lettered'))
    worker.on('leaseLost', (message) => {
      started.delete(message)
      this.tally.countProcessed(message.queue, 'lease_lost')
    })
  }

  /**
   * The text exposition of every metric. Reads the queue gauges from the database first (one
   * query on `queue_stats`) unless `queueStats` is false, for processes that export only their
   * own counters while another one exports the queues.
   */
  async text(options: { queueStats?: boolean } = {}): Promise<string> {
    if (options.queueStats !== false) await this.readQueueGauges()
    else {
      this.queueMessages.reset()
      this.oldestReadyAge.reset()
    }
    if (this.sources.streamLag) await this.readStreamLag(this.sources.streamLag)
    return this.registry.metrics()
  }

  /** The Content-Type of {@link text}, for an HTTP response. */
  get contentType(): string {
    return this.registry.contentType
  }

  private async readQueueGauges(): Promise<void> {
    const stats = await this.sources.queueStats()
    // Reset first, so a deleted queue's series disappear instead of keeping their last value.
    this.queueMessages.reset()
    this.oldestReadyAge.reset()
    for (const q of stats) {
      const counts: Record<(typeof QUEUE_STATES)[number], number> = { ready: q.ready, delayed: q.delayed, in_flight: q.inFlight, dead: q.dead }
      for (const state of QUEUE_STATES) this.queueMessages.set({ queue: q.queue, state }, counts[state])
      this.oldestReadyAge.set({ queue: q.queue }, (q.oldestReadyAgeMs ?? 0) / 1000)
    }
  }

  private async readStreamLag(source: () => Promise<StreamLagSample[]>): Promise<void> {
    const samples = await source()
    this.streamLag.reset()
    for (const s of samples) this.streamLag.set({ stream: s.stream, group: s.group, partition: String(s.partition) }, s.lag)
  }

}

type HistogramSnapshot = Awaited<ReturnType<Histogram<'queue'>['get']>>

/**
 * prom-client's Histogram with its values read from the tally instead of per-call `observe`
 * (see {@link ProcessTally} for why): same name, help, type and exposition. prom-client 15's
 * registry renders a histogram through `getForPromString()` (bucket labels apart from the
 * series' labels) and `getMetricsAsJSON` through `get()`; both are overridden. prom-client is
 * pinned, and the metrics test parses the exposition strictly, so a change there fails a test.
 */
class TalliedHistogram extends Histogram<'queue'> {
  private readonly metricName: string
  private readonly helpText: string

  constructor(
    private readonly tally: ProcessTally,
    configuration: HistogramConfiguration<'queue'>,
  ) {
    super(configuration)
    this.metricName = configuration.name
    this.helpText = configuration.help
  }

  /** What the text exposition renders: each value's `labels` and `sharedLabels` are joined. */
  async getForPromString(): Promise<Omit<HistogramSnapshot, 'values'> & { values: TalliedValue[] }> {
    const values: TalliedValue[] = []
    for (const [queue, d] of this.tally.durations) {
      const shared = { queue }
      let cumulative = 0
      for (const [i, bound] of this.tally.bounds.entries()) {
        cumulative += d.buckets[i] as number
        values.push({ metricName: `${this.metricName}_bucket`, labels: { le: bound }, sharedLabels: shared, value: cumulative })
      }
      values.push({ metricName: `${this.metricName}_bucket`, labels: { le: '+Inf' }, sharedLabels: shared, value: d.count })
      values.push({ metricName: `${this.metricName}_sum`, labels: {}, sharedLabels: shared, value: d.sum })
      values.push({ metricName: `${this.metricName}_count`, labels: {}, sharedLabels: shared, value: d.count })
    }
    // prom-client's own histograms say type 'histogram' here, not the MetricType enum of its typings.
    return { name: this.metricName, help: this.helpText, type: 'histogram' as unknown as HistogramSnapshot['type'], aggregator: 'sum', collect: () => {}, values }
  }

  override async get(): Promise<HistogramSnapshot> {
    const snapshot = await this.getForPromString()
    const values = snapshot.values.map(({ sharedLabels, labels, ...rest }) => ({ ...rest, labels: { ...labels, ...sharedLabels } }))
    return { ...snapshot, values } as HistogramSnapshot
  }
}

/** One line of the histogram as the text exposition takes it. */
interface TalliedValue {
  metricName: string
  labels: { le?: number | string }
  sharedLabels: { queue: string }
  value: number
}
