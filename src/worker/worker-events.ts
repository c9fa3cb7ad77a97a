import type { Message } from '../queue/message.js'
import type { RunEvents } from './handler-runner.js'

/**
 * What a worker reports, as typed events. `received` when a handler starts; `completed` when its
 * message was acked; `failed` with every handler error, followed by `retried` or `deadLettered`;
 * `leaseLost` when a delivery's lease was lost (its result is dropped: the newer delivery wins);
 * `error` for failures of the worker itself (a claim that could not run), which it survives by
 * retrying; `stopped` once `stop()` is done.
 */
export interface WorkerEvents extends RunEvents<Message> {
  error: [error: unknown]
  stopped: []
}
