import { InvalidOptionsError } from '../errors.js'
import { queueNameOf, type QueueRef } from '../queue/define-queue.js'
import type { Handler } from './handler.js'
import { Worker, type WorkerDeps } from './worker.js'
import { workerSettings, type WorkerOptions } from './worker-options.js'

/**
 * Pool connections that transactional handlers may not take: one for claims and one for lease
 * renewals. A transactional handler holds a connection from its start to its commit; were the
 * handlers to hold them all, claims would wait for a handler to finish and renewals would wait
 * until leases ran out. Seen in test/worker-connections.test.ts with the check turned off: 4
 * handlers on a pool of 4, each sending one message outside its transaction, completed none of
 * 8 messages (every send waited for a connection until the pool's timeout).
 */
export const TRANSACTIONAL_POOL_RESERVE = 2

/**
 * The workers of one Postbox: starts them with validated options, keeps transactional workers
 * within the connections the pool can give them, and stops them all on close.
 */
export class WorkerRegistry {
  private readonly workers = new Set<Worker<never, never>>()
  /** Connections the running transactional workers may hold at once: the sum of their concurrency. */
  private transactionalSlots = 0

  constructor(
    private readonly deps: WorkerDeps,
    /** Connections of the pool transactional handlers run on; null when postbox cannot see it (Kysely). */
    private readonly poolSize: number | null,
    private readonly defaultPollMs: number,
    /** Called before a worker starts claiming (starts the LISTEN connection). */
    private readonly beforeStart: () => void,
  ) {}

  /** Validates the arguments of `work()`, then creates and starts a worker. */
  start<P, Tx>(queues: QueueRef<P> | readonly QueueRef<P>[], handler: Handler<P, Tx>, options: WorkerOptions | undefined): Worker<P, Tx> {
    const list = Array.isArray(queues) ? (queues as readonly QueueRef<P>[]) : [queues as QueueRef<P>]
    if (list.length === 0) throw new InvalidOptionsError('work() needs at least one queue')
    list.forEach(queueNameOf)
    if (typeof handler !== 'function') throw new InvalidOptionsError('work() needs a handler function')
    const settings = workerSettings(options, this.defaultPollMs)
    const slots = settings.transactional ? settings.concurrency : 0
    this.checkConnections(slots)
    const worker = new Worker<P, Tx>(this.deps, list, handler, settings)
    const tracked = worker as unknown as Worker<never, never>
    this.workers.add(tracked)
    this.transactionalSlots += slots
    worker.once('stopped', () => {
      this.workers.delete(tracked)
      this.transactionalSlots -= slots
    })
    this.beforeStart()
    worker.start()
    return worker
  }

  /** Stops every worker (gracefully, each with its default timeout). */
  async stopAll(): Promise<void> {
    await Promise.all([...this.workers].map((worker) => worker.stop()))
  }

  /** Refuses transactional handlers that, with those already running, would leave the pool less than its reserve. */
  private checkConnections(slots: number): void {
    if (slots === 0 || this.poolSize === null) return
    const needed = this.transactionalSlots + slots + TRANSACTIONAL_POOL_RESERVE
    if (needed <= this.poolSize) return
    const others = this.transactionalSlots > 0 ? `, with ${this.transactionalSlots} held by the other transactional workers of this Postbox` : ''
    const room = this.poolSize - TRANSACTIONAL_POOL_RESERVE - this.transactionalSlots
    throw new InvalidOptionsError(
      `transactional concurrency ${slots} needs ${needed} pool connections${others}: one per running handler, which holds ` +
        `its transaction's connection until it commits, plus ${TRANSACTIONAL_POOL_RESERVE} for claims and lease renewals, ` +
        `and the pool has ${this.poolSize}. Raise poolSize (or your pg Pool's max) to at least ${needed}` +
        (room > 0 ? `, or lower concurrency to ${room}` : ', or stop another transactional worker first'),
    )
  }
}
