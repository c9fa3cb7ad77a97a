/**
 * A signal this soon after the first counts as the same one: a terminal's Ctrl-C reaches every
 * process of the foreground group, and a wrapper such as tsx may relay it once more.
 */
const SAME_SIGNAL_MS = 1_000

/**
 * Calls `onInterrupt` on the first SIGINT (Ctrl-C) or SIGTERM, and exits at once with 130 on a
 * second one a moment later, for someone who does not want to wait. Returns the function that
 * removes the handlers.
 */
export function handleInterrupts(onInterrupt: (signal: NodeJS.Signals) => void): () => void {
  let first: number | undefined
  const handler = (signal: NodeJS.Signals) => {
    if (first === undefined) {
      first = Date.now()
      onInterrupt(signal)
    } else if (Date.now() - first > SAME_SIGNAL_MS) {
      process.exit(130)
    }
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  return () => {
    process.removeListener('SIGINT', handler)
    process.removeListener('SIGTERM', handler)
  }
}
