import type { LazyAbort } from './lazy-abort.js'

export class HandlerTimeoutError extends Error {
  override name = 'HandlerTimeoutError'
}

/**
 * Calls a handler under a timeout: when it runs out, the handler's signal is aborted with a
 * {@link HandlerTimeoutError}. With `race`, the call settles at once with that error and the handler
 * runs on in the background; without (transactional mode, where the handler owns the connection),
 * the handler is awaited to the end and the error is thrown after it.
 */
export async function callWithTimeout(call: () => unknown, abort: LazyAbort, timeoutMs: number | null, race: boolean): Promise<void> {
  if (timeoutMs === null) {
    await call()
    return
  }
  const timeout = new HandlerTimeoutError(`handler took longer than ${timeoutMs} ms`)
  let timer: NodeJS.Timeout | undefined
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      abort.abort(timeout)
      if (race) reject(timeout)
    }, timeoutMs)
  })
  try {
    await Promise.race([Promise.resolve(call()), timedOut])
    if (abort.reason === timeout) throw timeout
  } finally {
    clearTimeout(timer)
  }
}
