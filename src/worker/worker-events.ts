import type { Message } from '../queue/message.js'

/**
 * What a worker reports, as typed events. `failed` comes with every handler error, followed by
 * `retried` or `deadLettered`; `leaseLost` when a delivery's lease was lost (its result is
 * dropped: the newer delivery wins); `error` for failures of the worker itself (a claim that
 * could not run), which it survives by retrying.
 */
export interface WorkerEvents {
  received: [message: Message]
  completed: [message: Message, info: { durationMs: number }]
  failed: [message: Message, error: unknown]
  retried: [message: Message, error: unknown]
  deadLettered: [message: Message, error: unknown]
  leaseLost: [message: Message]
  error: [error: unknown]
  stopped: []
}
