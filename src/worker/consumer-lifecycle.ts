import type { BackgroundService } from '../background-loop.js'
import { trackOpen } from '../open-resources.js'
import { parseOptions } from '../validation.js'
import { stopOptionsSchema, type StopOptions } from './worker-options.js'

/** The parts of a consumer that its lifecycle starts, pauses and stops. `E` is a piece of claimed work. */
export interface ConsumerParts<E> {
  /** What claims: started once, paused and resumed; stopping it ends claiming and returns the work that waited unstarted. */
  readonly claims: { start(): void; pause(): Promise<void>; resume(): void; stop(): Promise<E[]> }
  /** What runs handlers: waits for them up to a timeout, and returns the runs it had to cut short. */
  readonly runner: { finish(timeoutMs: number): Promise<E[]> }
  /** What writes completions: drained last, so that every finished handler's completion is written. */
  readonly completer: { drain(): Promise<void> }
  /** What keeps the holds (leases) of claimed work: started first, stopped last. */
  readonly keeper: BackgroundService
  /** Gives claimed work back at once, for another consumer to take. */
  giveBack(entries: readonly E[]): Promise<void>
  /** Reports a failure of the consumer itself. */
  report(error: unknown): void
  /** Warns about something ignored, such as invalid stop options. */
  warn(message: string, error: unknown): void
}

/**
 * Starts, pauses and stops a consumer made of {@link ConsumerParts}, with the contract every
 * background part of postbox has: `stop()` is idempotent, waits for work in flight, and never
 * throws. A graceful stop claims nothing more, gives back what waited unstarted, lets running
 * handlers finish within the timeout, cuts the rest short and gives them back, and writes the
 * completions still pending. Workers use it; a stream consumer can use it the same way.
 */
export class ConsumerLifecycle<E> {
  private started = false
  private stopped: Promise<void> | undefined
  private untrack: (() => void) | undefined

  constructor(
    private readonly parts: ConsumerParts<E>,
    /** How the consumer is named in leak reports (`openResources()`). */
    private readonly description: string,
    private readonly onStopped: () => void,
  ) {}

  /** Starts keeping holds and claiming. Idempotent. */
  start(): void {
    if (this.started) return
    this.started = true
    this.untrack = trackOpen('worker', this.description)
    this.parts.keeper.start()
    this.parts.claims.start()
  }

  /** Stops claiming; resolves once a claim already under way has finished. */
  pause(): Promise<void> {
    return this.parts.claims.pause()
  }

  /** Claims again after `pause()`. */
  resume(): void {
    this.parts.claims.resume()
  }

  /** Stops gracefully (see the class comment); `timeout` (default 30s) bounds the wait for running handlers. */
  stop(options?: StopOptions): Promise<void> {
    this.stopped ??= this.shutdown(options).catch((error: unknown) => this.parts.report(error))
    return this.stopped
  }

  private async shutdown(options: StopOptions | undefined): Promise<void> {
    let timeoutMs = 30_000
    try {
      timeoutMs = parseOptions(stopOptionsSchema, options, 'stop options').timeout ?? timeoutMs
    } catch (error) {
      this.parts.warn('postbox: ignoring invalid stop options', error)
    }
    try {
      // Work claimed but not started is given back at once; running handlers get their time.
      await this.parts.giveBack(await this.parts.claims.stop())
      await this.parts.giveBack(await this.parts.runner.finish(timeoutMs))
      await this.parts.completer.drain()
    } finally {
      await this.parts.keeper.stop()
      this.untrack?.()
      this.onStopped()
    }
  }
}
