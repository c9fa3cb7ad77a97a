import { EventEmitter } from 'node:events'
import pg from 'pg'
import { sleep, type BackgroundService } from '../background-loop.js'
import type { Logger } from '../logger.js'
import type { SchemaName } from '../schema-name.js'

/** Options of the {@link Notifier}. */
export interface NotifierOptions {
  connectionString: string
  schema: SchemaName
  logger: Logger
  /** How often the connection is checked with a query; default 10s. */
  healthCheckIntervalMs?: number
  /** How long that query may take before the connection counts as dead; default 5s. */
  healthCheckTimeoutMs?: number
}

type Listener = (queue: string) => void

/**
 * The one LISTEN connection of a Postbox, shared by all its workers and long polls. Notifications
 * carry only a queue name. It reconnects by itself with backoff when the connection drops, and a
 * periodic query with a timeout catches a half-open connection that would otherwise look alive.
 * After every (re)connect it wakes every waiter, since notifications sent meanwhile were lost.
 *
 * Events: `connected`, `lost` (with the error).
 */
export class Notifier extends EventEmitter implements BackgroundService {
  private client: pg.Client | undefined
  private readonly subscribers = new Map<string, Set<Listener>>()
  private stopped = new AbortController()
  private loop: Promise<void> | undefined
  private connectedNow = false
  /** Whether the latest session reached LISTEN (reset at each new session). */
  private sessionListened = false

  constructor(private readonly options: NotifierOptions) {
    super()
  }

  /** True while the LISTEN connection is up; when false, waiters fall back to polling. */
  get connected(): boolean {
    return this.connectedNow
  }

  start(): void {
    if (this.loop) return
    this.loop = this.run()
  }

  /** Calls `listener` when a message for `queue` commits; returns the unsubscribe function. */
  subscribe(queue: string, listener: Listener): () => void {
    let set = this.subscribers.get(queue)
    if (!set) this.subscribers.set(queue, (set = new Set()))
    set.add(listener)
    return () => {
      set.delete(listener)
      if (set.size === 0 && this.subscribers.get(queue) === set) this.subscribers.delete(queue)
    }
  }

  /** Resolves once connected (or when stopped). */
  async ready(): Promise<void> {
    if (this.connectedNow || this.stopped.signal.aborted) return
    await new Promise<void>((resolve) => {
      const done = () => {
        this.off('connected', done)
        this.stopped.signal.removeEventListener('abort', done)
        resolve()
      }
      this.on('connected', done)
      this.stopped.signal.addEventListener('abort', done, { once: true })
    })
  }

  async stop(): Promise<void> {
    if (!this.stopped.signal.aborted) this.stopped.abort()
    this.client?.end().catch(() => {})
    await this.loop
  }

  private wakeAll(): void {
    for (const [queue, set] of this.subscribers) for (const listener of [...set]) listener(queue)
  }

  private async run(): Promise<void> {
    const { signal } = this.stopped
    let backoff = 100
    while (!signal.aborted) {
      const lost = await this.session().catch((error: unknown) => error)
      this.connectedNow = false
      if (signal.aborted) break
      this.emit('lost', lost)
      this.options.logger.warn({ err: (lost as Error)?.message }, 'postbox: LISTEN connection lost; reconnecting')
      this.wakeAll() // waiters poll while we are away
      // A session that got as far as LISTEN starts the backoff over; failed connects double it.
      if (this.sessionListened) backoff = 100
      await sleep(backoff, signal)
      backoff = Math.min(backoff * 2, 5_000)
    }
    this.connectedNow = false
  }

  /** One connection's life: connect, LISTEN, check health until it fails. Resolves/rejects when it ends. */
  private async session(): Promise<unknown> {
    this.sessionListened = false
    const { schema, healthCheckIntervalMs = 10_000, healthCheckTimeoutMs = 5_000 } = this.options
    const client = new pg.Client({
      connectionString: this.options.connectionString,
      keepAlive: true,
      // LISTEN must never sit idle in a transaction (it would fill the notification queue).
      application_name: `postbox:${schema.name}:listen`,
    })
    this.client = client
    const ended = new Promise<Error>((resolve) => {
      client.on('error', resolve)
      client.on('end', () => resolve(new Error('connection ended')))
    })
    try {
      await client.connect()
      client.on('notification', (n) => {
        if (n.channel !== schema.name || !n.payload) return
        const set = this.subscribers.get(n.payload)
        if (set) for (const listener of [...set]) listener(n.payload)
      })
      await client.query(`LISTEN ${schema.sql}`)
      if (this.stopped.signal.aborted) return undefined
      this.connectedNow = true
      this.sessionListened = true
      this.emit('connected')
      this.options.logger.debug({}, 'postbox: LISTEN connection up')
      this.wakeAll()
      while (!this.stopped.signal.aborted) {
        const healthy = await Promise.race([
          sleep(healthCheckIntervalMs, this.stopped.signal).then(() => 'tick' as const),
          ended.then((e) => e),
        ])
        if (healthy !== 'tick') throw healthy
        if (this.stopped.signal.aborted) break
        const check = client.query('SELECT 1').then(() => 'ok' as const)
        const outcome = await Promise.race([check, ended, sleep(healthCheckTimeoutMs).then(() => 'timeout' as const)])
        if (outcome === 'timeout') throw new Error(`health check took over ${healthCheckTimeoutMs} ms (half-open connection?)`)
        if (outcome !== 'ok') throw outcome
      }
      return undefined
    } finally {
      this.connectedNow = false
      client.removeAllListeners('notification')
      // end() can hang on a half-open socket; do not wait for it.
      void client.end().catch(() => {})
      if (this.client === client) this.client = undefined
    }
  }
}
