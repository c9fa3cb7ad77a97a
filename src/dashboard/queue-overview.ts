import { flowSummary } from '../queue/queue-options.js'
import type { DashboardContext } from './routes.js'
import type { QueueCounts, Rates, Sample } from './stats-sampler.js'

/** A queue as the dashboard lists it: its latest counts, net change, and dead-letter links. */
export interface QueueOverview extends QueueCounts {
  queue: string
  /** Net change of depth per second over the rate window; null until two samples exist. */
  netPerSecond: number | null
  /** Where its exhausted messages go, or false. */
  deadLetter: string | false
  /** True when another queue dead-letters into this one. */
  isDeadLetterQueue: boolean
  /** Paused with pauseQueue: nothing is claimed. */
  paused: boolean
  /** Its flow control in a few words ('paused, max 20 in flight, 2/1s per key'), or ''. */
  flow: string
}

/** Everything the overview shows, as `/api/queues` returns it. */
export interface Overview {
  /** The time of the sample shown (database clock). */
  at: string | null
  sampleIntervalMs: number
  rates: Rates
  queues: QueueOverview[]
  /** Why the last sample failed, if it did (the numbers shown are then older). */
  samplingError: string | null
}

/** The newest sample, taking one now if the sampler has none yet. */
export async function latestSample(ctx: DashboardContext): Promise<Sample> {
  return ctx.sampler.latest() ?? (await ctx.sampler.sample())
}

/** The overview from the latest sample and the queues' settings. */
export async function readOverview(ctx: DashboardContext): Promise<Overview> {
  const [sample, settings] = await Promise.all([latestSample(ctx), ctx.postbox.listQueues()])
  const deadLetters = new Set(settings.flatMap((q) => (q.deadLetter === false ? [] : [q.deadLetter])))
  const deadLetterOf = new Map(settings.map((q) => [q.name, q.deadLetter]))
  const settingsOf = new Map(settings.map((q) => [q.name, q]))
  const queues = [...sample.queues.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([queue, counts]) => ({
      queue,
      ...counts,
      netPerSecond: ctx.sampler.netPerSecond(queue),
      deadLetter: deadLetterOf.get(queue) ?? false,
      isDeadLetterQueue: deadLetters.has(queue),
      paused: settingsOf.get(queue)?.paused ?? false,
      flow: (() => {
        const q = settingsOf.get(queue)
        return q ? flowSummary(q) : ''
      })(),
    }))
  return {
    at: new Date(sample.at).toISOString(),
    sampleIntervalMs: ctx.sampler.settings.intervalMs,
    rates: ctx.sampler.rates(),
    queues,
    samplingError: ctx.sampler.lastError?.message ?? null,
  }
}

/** A queue's depth over the kept history: sample times and counts per state. */
export interface QueueHistory {
  times: number[]
  ready: number[]
  delayed: number[]
  inFlight: number[]
}

export function queueHistory(ctx: DashboardContext, queue: string): QueueHistory {
  const h: QueueHistory = { times: [], ready: [], delayed: [], inFlight: [] }
  for (const sample of ctx.sampler.history()) {
    const c = sample.queues.get(queue)
    if (!c) continue
    h.times.push(sample.at)
    h.ready.push(c.ready)
    h.delayed.push(c.delayed)
    h.inFlight.push(c.inFlight)
  }
  return h
}

/**
 * The time the charts cover: the history kept so far (a dashboard that just started has only a
 * few seconds), at most the configured history.
 */
export function chartSpanMs(ctx: DashboardContext): number {
  const samples = ctx.sampler.history()
  const first = samples[0]
  const last = samples[samples.length - 1]
  const kept = first && last ? last.at - first.at : 0
  return Math.min(ctx.sampler.settings.keepMs, Math.max(kept, 2 * ctx.sampler.settings.intervalMs))
}
