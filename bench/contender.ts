import type { LoggedStatement } from './statement-log.js'

/** One end-to-end drain: rate, CPU per message on both sides, and what the client sent. */
export interface EndToEndRun {
  /** Messages per second, from asking the worker to start until it stopped with every message done. */
  rate: number
  /** Milliseconds from the start until the first handler ran. */
  firstHandlerMs: number
  /** Node CPU (user + system) per message, microseconds. */
  nodeCpuUs: number
  /** Postgres CPU per message, microseconds (undefined when the server is not on this machine). */
  postgresCpuUs: number | undefined
  /** Of which the client backends, running the statements (the rest: background writers, vacuum). */
  postgresBackendsUs: number | undefined
  /** Statements run during the drain, when the contender's pool records them. */
  statements?: LoggedStatement[]
  /** Claim sizes, in order, when the contender reports them. */
  claims?: number[]
}

/** Called just before a drain's clock starts and just after it stops (diagnostics read the server's counters). */
export interface DrainObserver {
  before(): Promise<void>
  after(): Promise<void>
}

/**
 * A queue the bench measures with the same scenarios: postbox, and each peer with its documented
 * fast settings, on the same Postgres, pool size and concurrency.
 */
export interface Contender {
  readonly name: string
  /** `count` messages preloaded (then vacuumed and checkpointed), drained by a no-op handler. */
  endToEnd(count: number, observer?: DrainObserver): Promise<EndToEndRun>
  /** Single sends from 10 callers while a worker consumes: messages per second. */
  sendWithConsumer(durationMs: number): Promise<number>
  /** Batches of 1,000 from 10 callers: messages per second. */
  sendBatches(durationMs: number): Promise<number>
  /** Enqueue call to handler start, `sends` sends `gapMs` apart to an idle worker: milliseconds. */
  wakeUpLatency(sends: number, gapMs: number): Promise<number[]>
  close(): Promise<void>
}
