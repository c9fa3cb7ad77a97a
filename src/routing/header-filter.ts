import { z } from 'zod'
import { ownRecord } from '../validation.js'
import { InvalidFilterError } from '../errors.js'
import { storableText } from '../queue/send-options.js'

/**
 * A binding's header filter, as SNS filter policies have it: every key must match (AND), a key
 * matches when the message's header of that name equals the value or one of the listed values
 * (OR), and a message without that header does not match. Headers are the `headers` of the
 * publish; values compare as exact strings.
 *
 * @example
 * await postbox.bind('audit', 'orders.#', { filter: { region: ['eu', 'us'], tier: 'gold' } })
 */
export type HeaderFilter = Readonly<Record<string, string | readonly string[]>>

const filterSchema = ownRecord(
  storableText.min(1, 'a header name must not be empty'),
  z.union([storableText, z.array(storableText).min(1, 'a list of values must not be empty')]),
)

/**
 * Checks a header filter; returns it as JSON text for the database, or null for none (undefined,
 * or `{}`). Anything but an object of strings or non-empty string arrays throws
 * {@link InvalidFilterError}. The database checks it again, and its size (at most 16 KiB).
 */
export function filterJson(filter: unknown): string | null {
  if (filter === undefined || filter === null) return null
  if (typeof filter !== 'object' || Array.isArray(filter)) {
    throw new InvalidFilterError(`a filter must be an object of header names to a string or an array of strings, got ${Array.isArray(filter) ? 'an array' : typeof filter}`)
  }
  const result = filterSchema.safeParse(filter)
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.length > 0 ? `${i.path.join('.')}: ` : ''}${i.message}`)
    throw new InvalidFilterError(`invalid filter: ${problems.join('; ')}; a filter maps header names to a string or a non-empty array of strings, as in { region: ['eu', 'us'] }`)
  }
  return Object.keys(result.data).length === 0 ? null : JSON.stringify(result.data)
}
