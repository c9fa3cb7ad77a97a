/**
 * Calls `stop` when the process exits without having stopped it (an uncaught error), so an
 * embedded Postgres is not left running: its stop sends the server its signal synchronously.
 * Returns the function that removes the listener.
 */
export function stopOnExit(stop: () => Promise<void>): () => void {
  const listener = () => void stop().catch(() => {})
  process.once('exit', listener)
  return () => process.removeListener('exit', listener)
}
