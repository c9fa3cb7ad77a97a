import { sleep, type BackgroundService } from '../background-loop.js'
import type { QueueStats } from '../postbox.js'

/** One queue's counts at a sample (total: ready + delayed + in flight). */
export type QueueCounts = Omit<QueueStats, 'queue' | 'retained'>

/** One reading of every queue, at a time of the database clock. */
export interface Sample {
  /** Database time, epoch milliseconds. */
  at: number
  /** The last message id drawn (every send draws one); 0 before the first send (ids start at 1). */
  lastMessageId: bigint
  queues: Map<string, QueueCounts>
}

/** What the sampler reads: a Postbox has both. */
export interface SampleSource {
  stats(): Promise<QueueStats[]>
  activity(): Promise<{ at: Date; lastMessageId: string | null }>
}

/** Rates over a window of samples, per second. */
export interface Rates {
  windowMs: number
  /** Messages sent, all queues together (ids drawn; a send rolled back counts too). */
  sentPerSecond: number | null
  /** Messages that left the table (acked, or dropped without a dead letter), all queues together. */
  removedPerSecond: number | null
}

/** Sampler settings, in milliseconds. */
export interface SamplerSettings {
  intervalMs: number
  /** How much history to keep, for the charts. */
  keepMs: number
  /** The window rates are measured over. */
  rateWindowMs: number
}

/**
 * Reads `queue_stats` and the message id sequence every `intervalMs` into a ring of recent
 * samples. A dashboard is often a process of its own, with no workers to count events from, so
 * everything it shows over time comes from the difference between two readings of the database:
 * depth per queue over the last minutes, each queue's net change per second, and, for all queues
 * together, messages sent per second (ids drawn) and removed per second (sent minus the growth
 * of all queues). A process that restarts starts with an empty history. Follows the
 * start/stop contract of background services.
 */
export class StatsSampler implements BackgroundService {
  private readonly samples: Sample[] = []
  private readonly stopping = new AbortController()
  private loop: Promise<void> | undefined
  private failure: Error | undefined

  constructor(
    private readonly source: SampleSource,
    readonly settings: SamplerSettings,
  ) {}

  start(): void {
    this.loop ??= this.run()
  }

  async stop(): Promise<void> {
    this.stopping.abort()
    await this.loop
  }

  /** The error of the last reading, if it failed (the next reading tries again). */
  get lastError(): Error | undefined {
    return this.failure
  }

  /** The newest sample, if any. */
  latest(): Sample | undefined {
    return this.samples[this.samples.length - 1]
  }

  /** Every sample kept, oldest first. */
  history(): readonly Sample[] {
    return this.samples
  }

  /** Reads once now and keeps the sample. */
  async sample(): Promise<Sample> {
    const [stats, activity] = await Promise.all([this.source.stats(), this.source.activity()])
    const queues = new Map<string, QueueCounts>()
    for (const s of stats) {
      const { queue, retained: _retained, ...counts } = s
      queues.set(queue, counts)
    }
    const sample = { at: activity.at.getTime(), lastMessageId: BigInt(activity.lastMessageId ?? 0), queues }
    const last = this.latest()
    if (!last || sample.at > last.at) this.samples.push(sample)
    while (this.samples.length > 0 && (this.samples[0] as Sample).at < sample.at - this.settings.keepMs) this.samples.shift()
    return sample
  }

  /** Sent and removed per second over the rate window, or null rates until two samples exist. */
  rates(): Rates {
    const pair = this.window()
    if (!pair) return { windowMs: 0, sentPerSecond: null, removedPerSecond: null }
    const [from, to] = pair
    const seconds = (to.at - from.at) / 1000
    const sent = Number(to.lastMessageId - from.lastMessageId) / seconds
    const growth = (sumTotals(to) - sumTotals(from)) / seconds
    return { windowMs: to.at - from.at, sentPerSecond: sent, removedPerSecond: Math.max(0, sent - growth) }
  }

  /** A queue's net change of depth (ready + delayed + in flight) per second over the rate window. */
  netPerSecond(queue: string): number | null {
    const pair = this.window()
    const from = pair?.[0].queues.get(queue)
    const to = pair?.[1].queues.get(queue)
    if (!pair || !from || !to) return null
    return (to.total - from.total) / ((pair[1].at - pair[0].at) / 1000)
  }

  /** The oldest sample within the rate window and the newest, when they differ. */
  private window(): [Sample, Sample] | undefined {
    const to = this.latest()
    if (!to) return undefined
    const from = this.samples.find((s) => s.at >= to.at - this.settings.rateWindowMs)
    return from && from !== to ? [from, to] : undefined
  }

  private async run(): Promise<void> {
    const { signal } = this.stopping
    while (!signal.aborted) {
      try {
        await this.sample()
        this.failure = undefined
      } catch (error) {
        this.failure = error instanceof Error ? error : new Error(String(error))
      }
      await sleep(this.settings.intervalMs, signal)
    }
  }
}

function sumTotals(sample: Sample): number {
  let sum = 0
  for (const q of sample.queues.values()) sum += q.total
  return sum
}
