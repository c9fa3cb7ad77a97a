import { sleep } from '../background-loop.js'
import type { Executor } from '../db/executor.js'
import type { Logger } from '../logger.js'
import { registerWaiter, sendersSettled, unregisterWaiter } from '../queries/waiters.js'
import type { SchemaName } from '../schema-name.js'
import type { Notifier } from './notifier.js'

interface Registration {
  /** Local time (ms) until which the waiters row is valid. */
  expiresAt: number
  /** Statements on this queue's row, in order: a delete must never overtake a later insert. */
  chain: Promise<void>
}

/** What a consumer does to look for messages; true when it found some. */
export type Recheck = () => Promise<boolean>

const BUSY_RETRY_MS = 5

/**
 * How idle consumers of one Postbox wait for messages without losing a wake-up and without
 * making senders pay for NOTIFY when nobody waits.
 *
 * Going idle: register in `waiters` (committed), take each queue's wake_key try-lock (which fails
 * while a sender that may have missed the registration is still in its transaction), look once
 * more, then sleep until a notification, the poll interval or the deadline. When the try-lock
 * fails, it sleeps only a few milliseconds (doubling) before looking again. Once a consumer finds
 * work it calls `busy()`, which removes the registration, so senders stop notifying.
 */
export class WakeUps {
  private readonly registrations = new Map<string, Registration>()

  constructor(
    private readonly db: Executor,
    private readonly s: SchemaName,
    private readonly notifier: Notifier | undefined,
    private readonly listener: string,
    private readonly pollMs: number,
    private readonly logger: Logger,
  ) {}

  /**
   * Waits until messages may be ready on one of `queues`, for at most `maxWaitMs`. Calls
   * `recheck` once after arming and returns true if it found work; false after sleeping.
   * `round` counts consecutive idle rounds, for the busy-retry backoff.
   */
  async wait(queues: readonly string[], maxWaitMs: number, signal: AbortSignal, recheck: Recheck, round = 0): Promise<boolean> {
    const notifier = this.notifier
    if (signal.aborted) return false
    if (!notifier) {
      await sleep(Math.min(this.pollMs, maxWaitMs), signal)
      return false
    }
    if (!notifier.connected) {
      // Poll until the LISTEN connection is (back) up; its coming up ends the wait early.
      const up = new AbortController()
      const wake = () => up.abort()
      notifier.once('connected', wake)
      signal.addEventListener('abort', wake, { once: true })
      await sleep(Math.min(this.pollMs, maxWaitMs), up.signal)
      notifier.off('connected', wake)
      signal.removeEventListener('abort', wake)
      return false
    }
    const woken = new AbortController()
    const wake = () => woken.abort()
    const unsubscribe = queues.map((queue) => notifier.subscribe(queue, wake))
    notifier.once('lost', wake)
    signal.addEventListener('abort', wake, { once: true })
    try {
      await this.register(queues, maxWaitMs)
      const settled = await sendersSettled(this.db, this.s, queues)
      if (await recheck()) return true
      const pause = settled ? Math.min(this.pollMs, maxWaitMs) : Math.min(BUSY_RETRY_MS * 2 ** Math.min(round, 10), this.pollMs, maxWaitMs)
      await sleep(pause, woken.signal)
      return false
    } finally {
      for (const off of unsubscribe) off()
      notifier.off('lost', wake)
      signal.removeEventListener('abort', wake)
    }
  }

  /** The consumer found work on these queues: senders need not notify it any more. */
  busy(queues: readonly string[]): void {
    const registered = queues.filter((queue) => this.registrations.has(queue))
    if (registered.length === 0) return
    for (const queue of registered) {
      const r = this.registrations.get(queue) as Registration
      r.expiresAt = 0
      r.chain = r.chain.then(() =>
        unregisterWaiter(this.db, this.s, [queue], this.listener).catch((error: Error) =>
          this.logger.debug({ err: error.message, queue }, 'postbox: could not unregister waiter'),
        ),
      )
    }
  }

  /** Forgets every registration (the rows expire by themselves) once pending statements ran. */
  async close(): Promise<void> {
    const pending = [...this.registrations.values()].map((r) => r.chain)
    await Promise.all(pending)
    const queues = [...this.registrations.keys()]
    this.registrations.clear()
    if (queues.length > 0) await unregisterWaiter(this.db, this.s, queues, this.listener).catch(() => {})
  }

  private async register(queues: readonly string[], maxWaitMs: number): Promise<void> {
    const now = Date.now()
    const ttl = Math.max(this.pollMs, maxWaitMs) + 5_000
    const stale = queues.filter((queue) => (this.registrations.get(queue)?.expiresAt ?? 0) < now + ttl / 2)
    if (stale.length === 0) return
    await Promise.all(
      stale.map((queue) => {
        const r = this.registrations.get(queue) ?? { expiresAt: 0, chain: Promise.resolve() }
        this.registrations.set(queue, r)
        const step = r.chain.then(async () => {
          await registerWaiter(this.db, this.s, [queue], this.listener, ttl)
          r.expiresAt = now + ttl
        })
        r.chain = step.catch(() => {})
        return step
      }),
    )
  }
}
