import { InvalidStreamNameError } from '../errors.js'
import { QUEUE_NAME } from '../queue-name.js'

/**
 * Returns the name if it is a valid stream or group name (the queue allowlist), else throws
 * {@link InvalidStreamNameError}; the SQL layer checks it again.
 */
export function assertStreamName(name: unknown, what: 'stream' | 'group' = 'stream'): string {
  if (typeof name === 'string' && QUEUE_NAME.test(name)) return name
  const shown = typeof name === 'string' ? JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name) : String(name)
  throw new InvalidStreamNameError(`invalid ${what} name ${shown}: use 1-63 characters of a-z, 0-9, _ . : - starting with a letter or digit`)
}
