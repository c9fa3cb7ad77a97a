/**
 * The start/stop contract every background part of postbox follows (notifier, workers, lease
 * keeper): `stop()` is idempotent, waits for in-flight work, and never throws past the caller.
 */
export interface BackgroundService {
  start(): void
  stop(): Promise<void>
}

/** Resolves after `ms`, or at once when `signal` aborts. Never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted || ms <= 0) return resolve()
    const timer = setTimeout(done, ms)
    function done() {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}
