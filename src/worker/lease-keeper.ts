import { sleep, type BackgroundService } from '../background-loop.js'
import type { Executor } from '../db/executor.js'
import { extendLeases } from '../queue/consumer.js'
import type { SchemaName } from '../schema-name.js'

/** A delivery whose lease the keeper extends while it waits for a handler and while its handler runs. */
export interface HeldLease {
  readonly id: string
  readonly lease: string
  /** The lease length, measured from the claim: it is extended by as much again. */
  readonly leaseMs: number
  /** Local time when the lease runs out unless extended. */
  expiresAt: number
  /** Set while the ack is being committed in a transaction: extending then would wait on its row lock. */
  completing: boolean
  /** Called once if the lease turns out to be lost. */
  onLost(): void
}

/**
 * Extends the leases of running handlers before they run out: every tick, each lease past half
 * its length is renewed, all of one length in one statement. A lease that cannot be renewed was
 * lost (the message was delivered again), and its handler is told through `onLost`.
 */
export class LeaseKeeper implements BackgroundService {
  private readonly held = new Set<HeldLease>()
  private readonly stopped = new AbortController()
  private loop: Promise<void> | undefined
  /** Ends the current sleep early, when a lease shorter than the tick it was planned for arrives. */
  private nudge = new AbortController()
  private tickMs = Infinity

  constructor(
    private readonly db: Executor,
    private readonly s: SchemaName,
    private readonly onError: (error: unknown) => void,
  ) {}

  add(lease: HeldLease): void {
    this.held.add(lease)
    if (lease.leaseMs / 4 < this.tickMs) this.nudge.abort()
  }

  remove(lease: HeldLease): void {
    this.held.delete(lease)
  }

  start(): void {
    this.loop ??= this.run()
  }

  async stop(): Promise<void> {
    this.stopped.abort()
    this.nudge.abort()
    await this.loop
  }

  private async run(): Promise<void> {
    while (!this.stopped.signal.aborted) {
      const shortest = Math.min(60_000, ...[...this.held].map((h) => h.leaseMs))
      this.tickMs = Math.max(25, shortest / 4)
      this.nudge = new AbortController()
      await sleep(this.tickMs, this.nudge.signal)
      this.tickMs = Infinity
      if (this.stopped.signal.aborted) break
      await this.renew().catch(this.onError)
    }
  }

  private async renew(): Promise<void> {
    const now = Date.now()
    const due = [...this.held].filter((h) => !h.completing && h.expiresAt - now < h.leaseMs / 2)
    const byLength = new Map<number, HeldLease[]>()
    for (const h of due) byLength.set(h.leaseMs, [...(byLength.get(h.leaseMs) ?? []), h])
    for (const [leaseMs, group] of byLength) {
      const kept = new Set(await extendLeases(this.db, this.s, group, leaseMs))
      for (const h of group) {
        if (!this.held.has(h) || h.completing) continue
        if (kept.has(h.id)) h.expiresAt = now + leaseMs
        else {
          this.held.delete(h)
          h.onLost()
        }
      }
    }
  }
}
