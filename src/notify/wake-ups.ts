import { sleep } from '../background-loop.js'
import type { Executor } from '../db/executor.js'
import type { Logger } from '../logger.js'
import { windowReopensInMs } from '../queries/flow.js'
import { registerWaiter, sendersSettled, unregisterWaiter, type ArmedWait } from '../queries/waiters.js'
import type { SchemaName } from '../schema-name.js'
import type { Notifier } from './notifier.js'

/** What a consumer does to look for messages; true when it found some. */
export type Recheck = () => Promise<boolean>

const BUSY_RETRY_MS = 5

/**
 * How idle consumers of one Postbox wait for messages without losing a wake-up and without
 * making senders pay for NOTIFY when nobody waits (the SQL side is `wake()` in the migrations).
 *
 * Going idle: register in `waiters` as not yet notified and, in the same statement, take each
 * queue's wake_key try-lock (which fails while a sender that may have missed the registration is
 * still in its transaction), look once more, then sleep until a notification, the poll interval or the
 * deadline. When the try-lock fails, it sleeps only a few milliseconds (doubling) before looking
 * again. A registration stays valid until a notification for its queue arrives (a sender marked
 * it notified) or it nears expiry; only then is it written again, so an idle cycle without news
 * costs no write. The statement that arms the wait also says when a full rate window of the
 * queues reopens, and the wait ends then (no NOTIFY says so).
 */
export class WakeUps {
  /** Per queue: local time until which our waiters row is valid and not yet marked notified. */
  private readonly armedUntil = new Map<string, number>()
  private readonly unsubscribe = new Map<string, () => void>()
  /** Per queue: notifications seen, so a registration racing a notification is not trusted. */
  private readonly notices = new Map<string, number>()

  constructor(
    private readonly db: Executor,
    private readonly s: SchemaName,
    private readonly notifier: Notifier | undefined,
    private readonly listener: string,
    private readonly pollMs: number,
    private readonly logger: Logger,
  ) {
    notifier?.on('connected', () => this.armedUntil.clear())
  }

  /**
   * Waits until messages may be ready on one of `queues`, for at most `maxWaitMs`. Calls
   * `recheck` once after arming and returns true if it found work; false after sleeping.
   * `round` counts consecutive idle rounds, for the busy-retry backoff. The sleep ends early when
   * a full rate window of the queues reopens; without a LISTEN connection (polling), only when
   * `rateWindows` asks for a look-up of its own (a worker's claim loop does).
   */
  async wait(queues: readonly string[], maxWaitMs: number, signal: AbortSignal, recheck: Recheck, round = 0, rateWindows = false): Promise<boolean> {
    const notifier = this.notifier
    if (signal.aborted) return false
    if (!notifier) {
      await this.poll(queues, Math.min(this.pollMs, maxWaitMs), signal, rateWindows)
      return false
    }
    const woken = new AbortController()
    const wake = () => woken.abort()
    const offs = [() => signal.removeEventListener('abort', wake)]
    signal.addEventListener('abort', wake, { once: true })
    try {
      if (!notifier.connected) {
        // Poll until the LISTEN connection is (back) up; its coming up ends the wait early.
        notifier.once('connected', wake)
        offs.push(() => notifier.off('connected', wake))
        await this.poll(queues, Math.min(this.pollMs, maxWaitMs), woken.signal, rateWindows)
        return false
      }
      for (const queue of queues) offs.push(notifier.subscribe(queue, wake))
      notifier.once('lost', wake)
      offs.push(() => notifier.off('lost', wake))
      const { settled, reopensInMs } = await this.arm(queues, maxWaitMs)
      if (await recheck()) return true
      const pause = settled ? Math.min(this.pollMs, maxWaitMs) : Math.min(BUSY_RETRY_MS * 2 ** Math.min(round, 10), this.pollMs, maxWaitMs)
      await sleep(reopensInMs === null ? pause : Math.min(pause, Math.max(1, Math.ceil(reopensInMs))), woken.signal)
      return false
    } finally {
      for (const off of offs) off()
    }
  }

  /**
   * Sleeps `ms` without a LISTEN connection; with `rateWindows`, looks up alongside when a full
   * rate window of the queues reopens and wakes then if that is sooner (a failed look-up leaves
   * the whole sleep).
   */
  private async poll(queues: readonly string[], ms: number, signal: AbortSignal, rateWindows: boolean): Promise<void> {
    if (!rateWindows) return sleep(ms, signal)
    const reopened = new AbortController()
    const ended = AbortSignal.any([signal, reopened.signal])
    let timer: NodeJS.Timeout | undefined
    windowReopensInMs(this.db, this.s, queues).then(
      (reopens) => {
        if (reopens !== null && reopens < ms && !ended.aborted) timer = setTimeout(() => reopened.abort(), Math.max(1, Math.ceil(reopens)))
      },
      () => {},
    )
    try {
      await sleep(ms, ended)
    } finally {
      reopened.abort()
      clearTimeout(timer)
    }
  }

  /** Removes this Postbox's registrations (it is closing). */
  async close(): Promise<void> {
    for (const off of this.unsubscribe.values()) off()
    const queues = [...this.armedUntil.keys()]
    this.armedUntil.clear()
    if (queues.length > 0) {
      await unregisterWaiter(this.db, this.s, queues, this.listener).catch((error: Error) =>
        this.logger.debug({ err: error.message }, 'postbox: could not unregister waiters'),
      )
    }
  }

  /**
   * Registers as waiting on the queues whose registration is not known to be valid and
   * unnotified, and says whether senders have settled on all of them and when a full rate window
   * reopens (one statement either way).
   */
  private async arm(queues: readonly string[], maxWaitMs: number): Promise<ArmedWait> {
    const now = Date.now()
    const ttl = Math.max(this.pollMs, maxWaitMs) + 5_000
    const stale = queues.filter((queue) => (this.armedUntil.get(queue) ?? 0) < now + ttl / 2)
    if (stale.length === 0) return sendersSettled(this.db, this.s, queues)
    for (const queue of stale) {
      // A notification means a sender marked our row notified: write it again before the next wait.
      if (!this.unsubscribe.has(queue) && this.notifier) {
        this.unsubscribe.set(queue, this.notifier.subscribe(queue, () => {
          this.armedUntil.set(queue, 0)
          this.notices.set(queue, (this.notices.get(queue) ?? 0) + 1)
        }))
      }
    }
    const before = stale.map((queue) => this.notices.get(queue) ?? 0)
    const armed = await registerWaiter(this.db, this.s, stale, this.listener, ttl, queues)
    stale.forEach((queue, i) => {
      if ((this.notices.get(queue) ?? 0) === before[i]) this.armedUntil.set(queue, now + ttl)
    })
    return armed
  }
}
