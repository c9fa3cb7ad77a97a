import { sleep } from '../background-loop.js'
import type { Executor } from '../db/executor.js'
import type { WakeUps } from '../notify/wake-ups.js'
import { ackAndClaim, claim, claimedMessages } from '../queue/consumer.js'
import { queueNameOf, type QueueRef } from '../queue/define-queue.js'
import type { Message } from '../queue/message.js'
import type { SchemaName } from '../schema-name.js'
import type { AckBatcher } from './ack-batcher.js'
import type { HandlerRunner, Held } from './handler-runner.js'
import type { HeldLease } from './lease-keeper.js'
import type { WorkerSettings } from './worker-options.js'

/** Auto prefetch holds about this much work: enough for batches, too little to hoard from other workers. */
const PREFETCH_WINDOW_S = 0.05

/**
 * The most an auto prefetch grows to while claims come back full. The loop claims when half its
 * room is free, so under a backlog claims settle near half of this (about 500, as graphile-worker
 * claims with its local queue of 500). Measured (bench/diagnose/claim-sql.ts, one connection):
 * claims of 500 cost 25.0 µs of backend CPU per message against 38.5 at 100.
 */
const MAX_PREFETCH = 1000

/**
 * A backlog's prefetch holds at most this much work at the current rate, so that a worker with
 * slow handlers does not hoard a queue's messages because its claims came back full.
 */
const BURST_WINDOW_S = 1

const ERROR_BACKOFF_MS = [100, 250, 500, 1_000, 2_000, 5_000]

/** What a {@link ClaimLoop} works with. */
export interface ClaimLoopOptions<P> {
  readonly db: Executor
  readonly schema: SchemaName
  readonly wakeUps: WakeUps
  readonly queues: readonly QueueRef<P>[]
  readonly settings: WorkerSettings
  /** Where claimed messages are started, as its slots free. */
  readonly runner: HandlerRunner<Message<P>, HeldLease>
  /** Acks waiting to be written, which claims carry; undefined when completions are not batched. */
  readonly riding: AckBatcher | undefined
  /** Starts keeping a claimed message's lease. */
  hold(message: Message<P>): HeldLease
  /** Reports a claim that failed; the loop backs off and carries on. */
  report(error: unknown): void
}

/**
 * Claims messages from a worker's queues in batches sized to free capacity and hands them to the
 * runner: claims only while there is room (free handlers plus a prefetch sized by throughput,
 * doubled by each claim that comes back full), one claim at a time, lingers briefly after a claim
 * that emptied the queue, and sleeps on wake-ups when nothing is ready. Claimed messages wait in a
 * buffer, their leases kept, until a handler is free.
 */
export class ClaimLoop<P> {
  private readonly stopping = new AbortController()
  private pauseGate: { promise: Promise<void>; open: () => void } | undefined
  /** Resolvers of the loop's wait for a freed slot or a finished claim. */
  private changeWaiters: (() => void)[] = []
  private loop: Promise<void> | undefined
  private next = 0
  /** The claim under way (one at a time), and the room it has reserved. */
  private readonly claims = new Set<Promise<unknown>>()
  private reserved = 0
  /** Whether the last claim came back full: more is likely waiting. */
  private backlog = false
  /**
   * The prefetch a backlog has earned: each claim that comes back full doubles it (up to
   * MAX_PREFETCH), one that does not resets it. The rate alone grows too slowly: a 20,000-message
   * drain lasts about a second, and its claims went 9, 11, 19, 36 … 186 over its ten tenths.
   */
  private burst = 0
  /** Claimed messages waiting for a free handler, oldest first; their leases are kept. */
  private readonly buffer: Held<Message<P>, HeldLease>[] = []
  private readonly names: readonly string[]
  /** Ends the loop's idle wait early: a group this worker held was freed (see groupFreed). */
  private idleWake: AbortController | undefined

  constructor(private readonly o: ClaimLoopOptions<P>) {
    this.names = o.queues.map(queueNameOf)
  }

  /** Starts claiming. */
  start(): void {
    this.loop ??= this.fetchLoop()
  }

  /** Stops claiming; resolves once a claim already under way has finished. */
  async pause(): Promise<void> {
    if (!this.pauseGate) {
      let open = () => {}
      const promise = new Promise<void>((resolve) => (open = resolve))
      this.pauseGate = { promise, open }
    }
    this.backlog = false
    this.o.riding?.expectClaims(false)
    await Promise.all(this.claims)
  }

  /** Claims again after `pause()`. */
  resume(): void {
    const gate = this.pauseGate
    this.pauseGate = undefined
    gate?.open()
  }

  /**
   * Stops for good: waits for the loop and for claims under way (what they claim lands in the
   * buffer first), then empties the buffer and returns it, for the caller to give back.
   */
  async stop(): Promise<Held<Message<P>, HeldLease>[]> {
    this.stopping.abort()
    this.resume()
    this.changed()
    await this.loop
    await Promise.all(this.claims)
    return this.buffer.splice(0)
  }

  /** Takes a message whose lease was lost out of the buffer. */
  drop(hold: HeldLease): void {
    const index = this.buffer.findIndex((b) => b.hold === hold)
    if (index >= 0) this.buffer.splice(index, 1)
  }

  /** A handler's slot came free: starts what waits, and wakes the loop when a claim is due. */
  vacated(): void {
    this.dispatch()
    if (this.shouldClaim()) this.changed()
  }

  /**
   * Messages to hold beyond running handlers. Auto: about 50 ms of work at the current rate
   * (measured: claims of 10 at a time capped a no-op worker near 5k msg/s, batches of 100 ran
   * twice as fast), so slow handlers prefetch next to nothing and fast ones claim in batches.
   */
  private prefetch(): number {
    if (this.o.settings.prefetch !== null) return this.o.settings.prefetch
    const perSecond = this.o.runner.completedPerSecond()
    const burst = Math.min(this.burst, Math.max(this.o.settings.concurrency, Math.round(perSecond * BURST_WINDOW_S)))
    return Math.min(MAX_PREFETCH, Math.max(1, Math.round(perSecond * PREFETCH_WINDOW_S), burst))
  }

  /** How many more messages may be claimed: free handlers plus the prefetch, less the buffer and claims under way. */
  private capacity(): number {
    return this.o.settings.concurrency + this.prefetch() - this.o.runner.occupied - this.buffer.length - this.reserved
  }

  /**
   * Whether to claim now: when the buffer is empty and a handler is free, or when at least half
   * the room is free. Waiting for half keeps claims in batches instead of one message at a time.
   */
  private shouldClaim(): boolean {
    const room = this.capacity()
    if (room <= 0) return false
    return (this.buffer.length === 0 && this.o.runner.hasRoom) ||
      room * 2 >= this.o.settings.concurrency + this.prefetch()
  }

  /** Starts handlers for buffered messages while handlers are free. */
  private dispatch(): void {
    while (this.o.runner.hasRoom && this.buffer.length > 0) {
      const next = this.buffer.shift() as Held<Message<P>, HeldLease>
      this.o.runner.start(next.delivery, next.hold)
    }
  }

  /** Wakes the loop when it waits for room or for a claim to finish. */
  private changed(): void {
    const waiters = this.changeWaiters
    this.changeWaiters = []
    for (const wake of waiters) wake()
  }

  private nextChange(): Promise<void> {
    return new Promise((resolve) => this.changeWaiters.push(resolve))
  }

  private async fetchLoop(): Promise<void> {
    const { signal } = this.stopping
    let idleRounds = 0
    let failures = 0
    while (!signal.aborted) {
      try {
        if (this.pauseGate) {
          await Promise.race([this.pauseGate.promise, sleep(60_000, signal)])
          continue
        }
        // One claim at a time, sized by the backlog (see burst). Two overlapping claims of about 70
        // did worse than one of about 500: end-to-end 0.42x against 0.55-0.67x the raw drain
        // (bench --quick --peers --only e2e), backend CPU per message 47.5 against 28.5-38 µs.
        if (!this.shouldClaim()) {
          await this.nextChange()
          continue
        }
        if (await this.claimRound()) {
          idleRounds = 0
          // The claim emptied the queue: let a trickle gather for the next one (claimLinger). That
          // claim comes within the linger, so the acks of what this one found wait to ride on it
          // rather than flush on their own after ackDelay: one statement fewer per wake-up of an
          // idle worker (bench/diagnose/wake-stages.ts: 0.95 ack statements per wake-up before).
          // Tried: going idle at once after a lone message found just after waking (3.3 statements
          // per wake-up instead of 4, and 1 send in 300 instead of 26 in 500 waiting out a linger);
          // but a trickle 5 ms apart then never lingers, one claim per message (test/worker.test.ts).
          if (!this.backlog && this.o.settings.claimLingerMs > 0) {
            this.o.riding?.expectClaims(true)
            await sleep(this.o.settings.claimLingerMs, signal)
          }
        } else {
          const idle = new AbortController()
          this.idleWake = idle
          const waking = AbortSignal.any([signal, idle.signal])
          // The wait also ends when a full rate window of these queues reopens: no NOTIFY says so.
          const found = await this.o.wakeUps.wait(this.names, this.o.settings.pollMs, waking, () => this.claimRound(), idleRounds, true)
          this.idleWake = undefined
          idleRounds = found ? 0 : idleRounds + 1
        }
        failures = 0
      } catch (error) {
        this.o.report(error)
        await sleep(ERROR_BACKOFF_MS[Math.min(failures++, ERROR_BACKOFF_MS.length - 1)] as number, signal)
      }
    }
  }

  /** Claims from each queue in turn while there is capacity; true if anything was claimed. */
  private async claimRound(): Promise<boolean> {
    let claimed = false
    const { queues } = this.o
    for (let i = 0; i < queues.length && !this.stopping.signal.aborted && !this.pauseGate; i++) {
      const free = this.capacity()
      if (free <= 0) break
      const index = (this.next + i) % queues.length
      const ref = queues[index] as QueueRef<P>
      const want = Math.min(free, 1000)
      const claiming = this.claimFrom(ref, want)
      const tracked = claiming.catch(() => {})
      this.claims.add(tracked)
      this.reserved += want
      let messages: Message<P>[]
      try {
        messages = await claiming
      } finally {
        this.reserved -= want
        this.claims.delete(tracked)
        this.changed()
      }
      this.backlog = messages.length === want
      this.burst = this.backlog ? Math.min(MAX_PREFETCH, 2 * Math.max(this.burst, want)) : 0
      this.o.riding?.expectClaims(this.backlog)
      if (messages.length === 0) continue
      claimed = true
      for (const message of messages) this.buffer.push({ delivery: message, hold: this.o.hold(message) })
      this.dispatch()
    }
    this.next = (this.next + 1) % queues.length
    return claimed
  }

  /**
   * Claims up to `want` messages. Acks waiting to be written ride along in the same statement
   * (one round trip fewer per claim for a busy worker); if the statement fails they are given
   * back to be written on their own.
   */
  private async claimFrom(ref: QueueRef<P>, want: number): Promise<Message<P>[]> {
    const { db, schema, riding, settings } = this.o
    const acks = riding?.take() ?? []
    if (acks.length === 0) return claim(db, schema, ref, want, settings.visibilityTimeoutMs)
    let claimed: Awaited<ReturnType<typeof ackAndClaim>>
    try {
      claimed = await ackAndClaim(db, schema, acks.map((p) => p.delivery), ref, want, settings.visibilityTimeoutMs)
    } catch (error) {
      riding?.restore(acks)
      throw error
    }
    riding?.settle(acks, claimed.acked)
    return claimedMessages(db, schema, ref, claimed.rows)
  }

  /**
   * A grouped message was acked or dead-lettered, so the next message of its group may be
   * claimed now. No notification says so (only sends notify), so a loop that went idle because
   * every ready message waited for a group held here would sleep until its next poll (200
   * grouped messages over 8 groups took 6 s that way, about 1 s with this).
   */
  groupFreed(): void {
    this.idleWake?.abort()
  }
}
