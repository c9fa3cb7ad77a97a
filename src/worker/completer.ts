/**
 * One handler run as a `Completer` sees it: the delivery, and how to call its handler.
 */
export interface HandlerRun<D> {
  readonly delivery: D
  /**
   * Calls the handler under the worker's handler timeout. `tx` is the driver's transaction
   * handle the handler's writes belong to (`ctx.tx`), or undefined outside a transaction.
   * Rejects with the handler's error.
   */
  call(tx: unknown): Promise<void>
  /** True when the delivery was lost or given back while its handler ran: it must not be completed. */
  readonly abandoned: boolean
  /** Says the completion is being written: keeping the delivery's hold now would only wait on it. */
  completing(): void
}

/** What became of a failed run: retried later, dead-lettered (or dropped), or null when its hold was lost. */
export type FailOutcome = 'retried' | 'dead' | 'dropped' | null

/**
 * Records what became of a handler run, in the spirit of River's jobcompleter: the worker runs
 * handlers, the completer writes their outcome. Two exist: `AckBatcher` (lease mode: acks
 * gathered for a few milliseconds, or riding on the next claim) and `TransactionalAck` (the
 * handler runs in a transaction that also acks). A stream's offset commit is meant to be a third.
 */
export interface Completer<D> {
  /**
   * True when the handler runs inside the completer's transaction. It then holds a connection
   * from its start to the commit, so its slot stays taken until the commit, and a handler timeout
   * waits for it to return instead of leaving it running on a connection the completer needs.
   */
  readonly holdsConnection: boolean
  /**
   * Runs the handler and completes the delivery once it resolves. Throws `LeaseLostError` when
   * the completion was fenced off (the delivery belongs to someone else now), or the handler's error.
   */
  complete(run: HandlerRun<D>): Promise<void>
  /** Records a run whose handler failed: retry later, or dead-letter. */
  fail(delivery: D, error: unknown): Promise<FailOutcome>
  /** Writes what is still pending and waits for it (a stopping worker calls it last). */
  drain(): Promise<void>
}
