import { Counter, Gauge, Histogram, Registry, type HistogramConfiguration } from 'prom-client'
import type { QueueStats } from '../postbox.js'
import type { StreamLagSample } from './postbox-metrics.js'
import type { ProcessTally } from './process-tally.js'

const QUEUE_STATES = ['ready', 'delayed', 'in_flight', 'dead'] as const

/**
 * The prom-client registry of one Postbox (not prom-client's global one, so two Postboxes in one
 * process, or an app's own metrics, never collide): the queue gauges, set from `queue_stats` at
 * each scrape, and the counters and histogram, read from the process's tally. Loaded on the
 * first scrape only, so a process that is never scraped does not load prom-client at all.
 */
export class PrometheusRegistry {
  readonly registry = new Registry()
  private readonly queueMessages: Gauge<'queue' | 'state'>
  private readonly oldestReadyAge: Gauge<'queue'>
  private readonly streamLag: Gauge<'stream' | 'group' | 'partition'>

  constructor(tally: ProcessTally) {
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
      buckets: [...tally.bounds],
      registers,
    })
    this.streamLag = new Gauge({
      name: 'postbox_stream_lag',
      help: 'Events a consumer group has yet to read, per stream partition.',
      labelNames: ['stream', 'group', 'partition'],
      registers,
    })
  }

  /** The text exposition, with the queue gauges set from `stats` (none when undefined) and the stream lag from `lag`. */
  async text(stats: readonly QueueStats[] | undefined, lag: readonly StreamLagSample[] | undefined): Promise<string> {
    // Reset first, so a deleted queue's series disappear instead of keeping their last value.
    this.queueMessages.reset()
    this.oldestReadyAge.reset()
    for (const q of stats ?? []) {
      const counts: Record<(typeof QUEUE_STATES)[number], number> = { ready: q.ready, delayed: q.delayed, in_flight: q.inFlight, dead: q.dead }
      for (const state of QUEUE_STATES) this.queueMessages.set({ queue: q.queue, state }, counts[state])
      this.oldestReadyAge.set({ queue: q.queue }, (q.oldestReadyAgeMs ?? 0) / 1000)
    }
    this.streamLag.reset()
    for (const s of lag ?? []) this.streamLag.set({ stream: s.stream, group: s.group, partition: String(s.partition) }, s.lag)
    return this.registry.metrics()
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
