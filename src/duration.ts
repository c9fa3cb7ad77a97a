import { z } from 'zod'

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/

/** A duration: milliseconds as a number, or a string such as `'500ms'`, `'30s'`, `'5m'`, `'2h'`, `'7d'`. */
export type Duration = number | string

/** Converts a {@link Duration} to whole milliseconds; returns undefined for anything else. */
export function toMilliseconds(value: Duration): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? Math.round(value) : undefined
  const match = DURATION.exec(value.trim())
  if (!match) return undefined
  return Math.round(Number(match[1]) * (UNITS[match[2] as string] as number))
}

const MAX_MS = 10 * 365 * 86_400_000

/** A zod schema that accepts a {@link Duration} from 0 to ten years and outputs milliseconds. */
export const durationMs = z.union([z.number(), z.string()]).transform((value, ctx) => {
  const ms = toMilliseconds(value)
  if (ms === undefined || ms < 0 || ms > MAX_MS) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a duration such as 500, '500ms', '30s', '5m', '2h' or '7d', from 0 to 10 years; got ${JSON.stringify(value)}`,
    })
    return z.NEVER
  }
  return ms
})

/** Like {@link durationMs}, but refuses zero. */
export const positiveDurationMs = durationMs.refine((ms) => ms > 0, 'must be longer than 0')
