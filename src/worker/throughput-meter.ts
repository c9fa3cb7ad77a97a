const BUCKET_MS = 100
const BUCKETS = 10

/**
 * Counts events over the last second in ten 100 ms buckets, cheaply enough to call once per
 * handled message. The worker sizes its prefetch from it.
 */
export class ThroughputMeter {
  private readonly counts = new Array<number>(BUCKETS).fill(0)
  private current = Math.floor(Date.now() / BUCKET_MS)

  record(): void {
    this.advance()
    this.counts[this.current % BUCKETS]!++
  }

  /** Events per second over the last second. */
  perSecond(): number {
    this.advance()
    return this.counts.reduce((sum, n) => sum + n, 0) * (1000 / (BUCKET_MS * BUCKETS))
  }

  private advance(): void {
    const now = Math.floor(Date.now() / BUCKET_MS)
    for (let b = this.current + 1; b <= now && b <= this.current + BUCKETS; b++) this.counts[b % BUCKETS] = 0
    this.current = Math.max(this.current, now)
  }
}
