import type { z } from 'zod'
import { InvalidOptionsError } from './errors.js'

/**
 * Parses options at the edge of the API with a zod schema; anything unknown or malformed becomes
 * one {@link InvalidOptionsError} that names each problem and where it is.
 */
export function parseOptions<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const result = schema.safeParse(value ?? {})
  if (result.success) return result.data
  const problems = result.error.issues.map((issue) => {
    const path = issue.path.length > 0 ? `${issue.path.join('.')}: ` : ''
    return `${path}${issue.message}`
  })
  throw new InvalidOptionsError(`invalid ${what}: ${problems.join('; ')}`)
}
