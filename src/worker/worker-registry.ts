import { InvalidOptionsError } from '../errors.js'
import { queueNameOf, type QueueRef } from '../queue/define-queue.js'
import type { Handler } from './handler.js'
import { Worker, type WorkerDeps } from './worker.js'
import { workerSettings, type WorkerOptions } from './worker-options.js'

/** The workers of one Postbox: starts them with validated options, and stops them all on close. */
export class WorkerRegistry {
  private readonly workers = new Set<Worker<never, never>>()

  constructor(
    private readonly deps: WorkerDeps,
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
    const worker = new Worker<P, Tx>(this.deps, list, handler, settings)
    const tracked = worker as unknown as Worker<never, never>
    this.workers.add(tracked)
    worker.once('stopped', () => this.workers.delete(tracked))
    this.beforeStart()
    worker.start()
    return worker
  }

  /** Stops every worker (gracefully, each with its default timeout). */
  async stopAll(): Promise<void> {
    await Promise.all([...this.workers].map((worker) => worker.stop()))
  }
}
