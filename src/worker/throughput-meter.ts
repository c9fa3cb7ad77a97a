const BUCKET_MS = 100
const BUCKETS = 10
const WINDOW_MS = BUCKET_MS * BUCKETS

/**
 * The shortest span a rate is taken over: a handful of completions within a millisecond or two
 * says little about a rate, and the prefetch must not leap on it.
 */
const MIN_SPAN_MS = 50

/**
 * Counts events over the last second in ten 100 ms buckets, cheaply enough to call once per
 * handled message. The worker sizes its prefetch from it.
 *
 * A rate is the count divided by the time the events span: the whole second once events have
 * run that long, and only the time since the first of them before that (at least 50 ms). Divided
 * by a whole second from the start, a worker that began a drain 100 ms ago read a tenth of its
 * rate, and its claims, capped at a second of work at that rate, stayed small for the first
 * tenths of the bench's 20,000-message drain (mean claim 16, then 57, then 231, before 507).
 */
export class ThroughputMeter {
  private readonly counts = new Array<number>(BUCKETS).fill(0)
  private current = Math.floor(Date.now() / BUCKET_MS)
  private total = 0
  /** When the first event counted now happened: the first one after the window was empty. */
  private since = 0

  record(): void {
    const now = Date.now()
    this.advance(now)
    if (this.total === 0) this.since = now
    this.counts[this.current % BUCKETS]!++
    this.total++
  }

  /** Events per second over the last second, or over the time since they began if less. */
  perSecond(): number {
    const now = Date.now()
    this.advance(now)
    if (this.total === 0) return 0
    return (this.total * 1000) / Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, now - this.since))
  }

  private advance(nowMs: number): void {
    const now = Math.floor(nowMs / BUCKET_MS)
    for (let b = this.current + 1; b <= now && b <= this.current + BUCKETS; b++) {
      this.total -= this.counts[b % BUCKETS]!
      this.counts[b % BUCKETS] = 0
    }
    this.current = Math.max(this.current, now)
  }
}
