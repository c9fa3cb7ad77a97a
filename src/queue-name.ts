import { InvalidQueueNameError } from './errors.js'

/** The allowlist every queue name must match; the SQL layer checks it again. */
export const QUEUE_NAME = /^[a-z0-9][a-z0-9_.:-]{0,62}$/

/** Returns the name if it is a valid queue name, else throws {@link InvalidQueueNameError}. */
export function assertQueueName(name: unknown): string {
  if (typeof name === 'string' && QUEUE_NAME.test(name)) return name
  const shown = typeof name === 'string' ? JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name) : String(name)
  throw new InvalidQueueNameError(
    `invalid queue name ${shown}: use 1-63 characters of a-z, 0-9, _ . : - starting with a letter or digit`,
  )
}
