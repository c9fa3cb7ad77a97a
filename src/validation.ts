import { z } from 'zod'
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

const plainObject = z.custom<object>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), 'must be an object')

/**
 * `z.record(key, value)` that keeps every own key. zod's record skips a `__proto__` key
 * altogether (neither checked nor kept: it assigns keys), which would drop a header, or turn a
 * header filter on `__proto__` into no filter. Here each entry is checked as a [key, value] pair
 * and the result is built with `Object.fromEntries`, which defines keys rather than assigns them.
 */
export function ownRecord<V extends z.ZodType>(key: z.ZodType<string>, value: V) {
  const entry = z.tuple([key, value])
  return plainObject.transform((object, ctx) => {
    const entries: [string, z.output<V>][] = []
    for (const [k, v] of Object.entries(object)) {
      const result = entry.safeParse([k, v])
      if (result.success) entries.push(result.data as [string, z.output<V>])
      // An issue's path starts with 0 (the key) or 1 (the value): name the key instead.
      else for (const issue of result.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: [k, ...issue.path.slice(1)] })
    }
    return Object.fromEntries(entries) as Record<string, z.output<V>>
  })
}
