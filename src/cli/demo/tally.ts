import type { Message } from '../../queue/message.js'
import type { Worker } from '../../worker/worker.js'

/** Worker events seen for one queue. */
export interface Counts {
  received: number
  completed: number
  failed: number
  retried: number
  deadLettered: number
  leaseLost: number
}

const zero = (): Counts => ({ received: 0, completed: 0, failed: 0, retried: 0, deadLettered: 0, leaseLost: 0 })

/**
 * Counts what workers report, per queue, so the demo's summary says what happened rather than
 * what was planned; and lets a scenario wait for a condition on those counts without polling.
 *
 * @example
 * const tally = new Tally()
 * tally.watch(postbox.work('emails', sendEmail))
 * await tally.until((t) => t.total().completed === 5, signal, 'five emails')
 */
export class Tally {
  /** Counts by queue name. */
  readonly byQueue = new Map<string, Counts>()
  private readonly changed = new Set<() => void>()

  /** Subscribes to a worker's events; returns the worker. */
  watch<P, Tx>(worker: Worker<P, Tx>): Worker<P, Tx> {
    const count = (key: keyof Counts) => (message: Message) => {
      const counts = this.byQueue.get(message.queue) ?? zero()
      counts[key]++
      this.byQueue.set(message.queue, counts)
      for (const wake of [...this.changed]) wake()
    }
    worker.on('received', count('received'))
    worker.on('completed', count('completed'))
    worker.on('failed', count('failed'))
    worker.on('retried', count('retried'))
    worker.on('deadLettered', count('deadLettered'))
    worker.on('leaseLost', count('leaseLost'))
    return worker
  }

  /** One queue's counts (zeros when nothing was seen). */
  of(queue: string): Counts {
    return { ...(this.byQueue.get(queue) ?? zero()) }
  }

  /** The counts summed over every queue. */
  total(): Counts {
    const sum = zero()
    for (const counts of this.byQueue.values()) {
      for (const key of Object.keys(sum) as (keyof Counts)[]) sum[key] += counts[key]
    }
    return sum
  }

  /**
   * Resolves once `done` holds, checked after every event; rejects when `signal` aborts or after
   * `timeoutMs`, naming `what` it was waiting for.
   */
  until(done: (tally: Tally) => boolean, signal: AbortSignal, what: string, timeoutMs = 20_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const finish = (error?: unknown) => {
        this.changed.delete(check)
        clearTimeout(timer)
        signal.removeEventListener('abort', aborted)
        if (error === undefined) resolve()
        else reject(error)
      }
      const check = () => {
        if (done(this)) finish()
      }
      const aborted = () => finish(signal.reason)
      const timer = setTimeout(() => finish(new Error(`demo: timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs)
      if (signal.aborted) return finish(signal.reason)
      signal.addEventListener('abort', aborted, { once: true })
      this.changed.add(check)
      check()
    })
  }
}
