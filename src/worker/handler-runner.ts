import { sleep } from '../background-loop.js'
import { LeaseLostError } from '../errors.js'
import type { Completer, HandlerRun } from './completer.js'
import { callWithTimeout } from './handler-timeout.js'
import { LazyAbort } from './lazy-abort.js'
import { ThroughputMeter } from './throughput-meter.js'

/** What a runner reports about each delivery; a worker re-emits these as its own events. */
export interface RunEvents<D> {
  received: [delivery: D]
  completed: [delivery: D, info: { durationMs: number }]
  /** `info.durationMs`: from the handler's start to its failure. */
  failed: [delivery: D, error: unknown, info: { durationMs: number }]
  retried: [delivery: D, error: unknown]
  deadLettered: [delivery: D, error: unknown]
  leaseLost: [delivery: D]
}

/** What keeps a claimed delivery completable while it waits and runs: its lease, say. */
export interface Hold {
  /** Set once the completion is being written. */
  completing: boolean
}

/** A claimed delivery and its hold. */
export interface Held<D, H extends Hold = Hold> {
  readonly delivery: D
  readonly hold: H
}

/** What a {@link HandlerRunner} is given: its limits, its completer, and its ways out. */
export interface RunnerOptions<D, H extends Hold> {
  /** Handlers running at once. */
  readonly concurrency: number
  /** Abort a handler's signal (and fail its run) after this long; null for no limit. */
  readonly handlerTimeoutMs: number | null
  readonly completer: Completer<D>
  /** Calls the user's handler for a run; `tx` is the completer's transaction handle, if any. */
  invoke(run: Run<D, H>, tx: unknown): unknown
  /** Where the runner's events go: the worker itself, which emits them as its own. */
  readonly events: { emit<K extends keyof RunEvents<D>>(event: K, ...args: RunEvents<D>[K]): unknown }
  /** Reports a failure of the runner itself, such as a failed run that could not be recorded. */
  report(error: unknown): void
  /** Stops keeping a run's hold: its handler is done. */
  unhold(hold: H): void
  /** Says a slot came free, so whatever waits for one can start. */
  vacated(): void
  /** Says a delivery left for good (completed, or dead-lettered): what it held back may go on. */
  finished?(delivery: D): void
}

/**
 * One handler run: the delivery, its hold, its abort signal (made only when read: a run is its
 * own {@link LazyAbort}, one object per message fewer), and where it stands.
 */
export class Run<D, H extends Hold> extends LazyAbort implements HandlerRun<D>, Held<D, H> {
  /** Settles when the run is over: completed, failed and recorded, or dropped. Set by `start`. */
  done!: Promise<void>
  /** Set when the hold was lost while the handler ran: its result is dropped. */
  lost = false
  /** Set when a stop gave the delivery back: its result is dropped. */
  released = false
  /** True until the run gives its slot back: when its handler settles, or after its commit. */
  occupying = true

  constructor(
    private readonly runner: HandlerRunner<D, H>,
    readonly delivery: D,
    readonly hold: H,
  ) {
    super()
  }

  get abandoned(): boolean {
    return this.lost || this.released
  }

  call(tx: unknown): Promise<void> {
    return this.runner.callHandler(this, tx)
  }

  completing(): void {
    this.hold.completing = true
  }
}

/**
 * Runs handlers for claimed deliveries, at most `concurrency` at once: each under its timeout
 * and an abort signal made only when read, completed through the {@link Completer} when it
 * resolves, recorded as failed when it throws, and dropped when its hold was lost. What claims
 * the deliveries and what keeps their holds are the caller's; a worker and a stream consumer
 * share this part.
 */
export class HandlerRunner<D, H extends Hold> {
  private readonly running = new Set<Run<D, H>>()
  private taken = 0
  private readonly completions = new ThroughputMeter()

  constructor(private readonly o: RunnerOptions<D, H>) {}

  /** Handlers running now, and completions under way. */
  get size(): number {
    return this.running.size
  }

  /** Slots taken: by running handlers, and by completions that hold their connection. */
  get occupied(): number {
    return this.taken
  }

  /** Whether a handler may start now. */
  get hasRoom(): boolean {
    return this.taken < this.o.concurrency
  }

  /** Runs completed per second over the last second. */
  completedPerSecond(): number {
    return this.completions.perSecond()
  }

  /** Starts the handler of a claimed delivery, taking a slot; the run's `done` settles when it is over. */
  start(delivery: D, hold: H): Run<D, H> {
    const run = new Run(this, delivery, hold)
    this.taken++
    this.running.add(run)
    this.o.events.emit('received', delivery)
    run.done = this.handle(run).finally(() => {
      this.o.unhold(hold)
      this.running.delete(run)
      this.vacate(run)
    })
    return run
  }

  /** Aborts the run holding `hold` with `reason`, its result to be dropped; false when none does. */
  lose(hold: H, reason: unknown): boolean {
    for (const run of this.running) {
      if (run.hold !== hold) continue
      run.lost = true
      run.abort(reason)
      return true
    }
    return false
  }

  /**
   * Waits up to `timeoutMs` for the running handlers, then aborts the rest and returns them,
   * marked released: their results are dropped, and the caller gives them back.
   */
  async finish(timeoutMs: number): Promise<Run<D, H>[]> {
    // The timer is cancelled once the handlers are done, so it cannot keep the process alive.
    const finished = new AbortController()
    const all = Promise.all([...this.running].map((r) => r.done)).then(() => finished.abort())
    await Promise.race([all, sleep(timeoutMs, finished.signal)])
    finished.abort()
    return [...this.running].filter((r) => !r.released).map((r) => {
      r.released = true
      r.abort(new Error('worker stopped'))
      return r
    })
  }

  /**
   * Calls a run's handler under the handler timeout (see {@link callWithTimeout}). When the
   * completer holds no connection, the call settles at a timeout and the slot frees as soon as
   * the handler settles; otherwise the handler is awaited and keeps its slot until the commit.
   */
  callHandler(run: Run<D, H>, tx: unknown): Promise<void> {
    const race = !this.o.completer.holdsConnection
    const called = this.o.handlerTimeoutMs === null ? this.invoke(run, tx) : callWithTimeout(() => this.o.invoke(run, tx), run, this.o.handlerTimeoutMs, race)
    return race ? called.finally(() => this.vacate(run)) : called
  }

  /** Calls the handler without a timeout; a handler that throws rejects rather than throws. */
  private async invoke(run: Run<D, H>, tx: unknown): Promise<void> {
    await this.o.invoke(run, tx)
  }

  private async handle(run: Run<D, H>): Promise<void> {
    const started = Date.now()
    try {
      await this.o.completer.complete(run)
      this.completions.record()
      this.o.finished?.(run.delivery)
      this.o.events.emit('completed', run.delivery, { durationMs: Date.now() - started })
    } catch (error) {
      if (error instanceof LeaseLostError || run.lost) {
        if (!run.released) this.o.events.emit('leaseLost', run.delivery)
        return
      }
      if (run.released) return
      this.vacate(run)
      await this.fail(run.delivery, error, Date.now() - started)
    }
  }

  /** Gives the run's slot back once. */
  private vacate(run: Run<D, H>): void {
    if (!run.occupying) return
    run.occupying = false
    this.taken--
    this.o.vacated()
  }

  private async fail(delivery: D, error: unknown, durationMs: number): Promise<void> {
    this.o.events.emit('failed', delivery, error, { durationMs })
    const outcome = await this.o.completer.fail(delivery, error).catch((failError: unknown) => {
      this.o.report(failError)
      return 'unknown' as const
    })
    if (outcome === null) this.o.events.emit('leaseLost', delivery)
    else if (outcome === 'retried') this.o.events.emit('retried', delivery, error)
    else if (outcome !== 'unknown') {
      this.o.finished?.(delivery)
      this.o.events.emit('deadLettered', delivery, error)
    }
  }
}
