import type { QueueStats } from '../postbox.js'
import type { WorkerEvents } from '../worker/worker-events.js'
import { ProcessTally } from './process-tally.js'
import type { PrometheusRegistry } from './prometheus-registry.js'

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
  /** Lag per stream, group and partition (the `stream_stats` view), for `postbox_stream_lag`. */
  streamLag?(): Promise<StreamLagSample[]>
}

/** The part of a Worker these metrics listen to. */
export interface ObservableWorker {
  on<E extends keyof WorkerEvents>(event: E, listener: (...args: WorkerEvents[E]) => void): unknown
}

/** Handler durations, seconds: from 1 ms (a no-op handler with its ack) to a minute. */
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

/** The Content-Type of the Prometheus text exposition (format 0.0.4). */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/**
 * The Prometheus metrics of one Postbox. Counters count what this process did: messages it
 * sent, and the outcomes and durations of the handlers its workers ran, in a plain tally (see
 * {@link ProcessTally}). Gauges are read from the database when scraped, so they describe every
 * process. prom-client is imported on the first scrape (about 0.1 s of CPU at start-up that a
 * worker that is never scraped does not pay).
 */
export class PostboxMetrics {
  private readonly tally = new ProcessTally(DURATION_BUCKETS)
  private prometheus: Promise<PrometheusRegistry> | undefined

  constructor(private readonly sources: MetricsSources) {}

  /** Counts `count` messages sent to `queue` by this process. */
  countSent(queue: string, count: number): void {
    this.tally.countSent(queue, count)
  }

  /**
   * Counts a worker's outcomes and handler durations, from its events: `completed` and `failed`
   * bring the worker's own duration (for a completion, handler plus ack). Nothing is kept per
   * message: a WeakMap entry per `received` message, to time failures, was 2% of the worker's
   * CPU in the end-to-end drain's profile, for an event most messages never have.
   */
  observe(worker: ObservableWorker): void {
    worker.on('completed', (message, info) => {
      this.tally.observeDuration(message.queue, info.durationMs / 1000)
      this.tally.countProcessed(message.queue, 'completed')
    })
    worker.on('failed', (message, _error, info) => this.tally.observeDuration(message.queue, info.durationMs / 1000))
    worker.on('retried', (message) => this.tally.countProcessed(message.queue, 'retried'))
    worker.on('deadLettered', (message) => this.tally.countProcessed(message.queue, 'dead_lettered'))
    worker.on('leaseLost', (message) => this.tally.countProcessed(message.queue, 'lease_lost'))
  }

  /**
   * The text exposition of every metric. Reads the queue gauges from the database first (one
   * query on `queue_stats`) unless `queueStats` is false, for processes that export only their
   * own counters while another one exports the queues.
   */
  async text(options: { queueStats?: boolean } = {}): Promise<string> {
    this.prometheus ??= import('./prometheus-registry.js').then((m) => new m.PrometheusRegistry(this.tally))
    const [prometheus, stats, lag] = await Promise.all([
      this.prometheus,
      options.queueStats === false ? undefined : this.sources.queueStats(),
      this.sources.streamLag?.(),
    ])
    return prometheus.text(stats, lag)
  }
}
