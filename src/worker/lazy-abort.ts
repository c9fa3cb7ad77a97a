/**
 * An AbortController made only when a handler reads its signal. Most handlers never do, and
 * making one per message was about 3% of the worker's CPU (profile of the bench's end-to-end run).
 */
export class LazyAbort {
  private controller: AbortController | undefined
  private aborted = false
  private why: unknown

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController()
      if (this.aborted) this.controller.abort(this.why)
    }
    return this.controller.signal
  }

  /** The reason given to `abort`, or undefined while not aborted. */
  get reason(): unknown {
    return this.aborted ? this.why : undefined
  }

  abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.why = reason
    this.controller?.abort(reason)
  }
}
