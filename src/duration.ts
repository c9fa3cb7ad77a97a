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

/**
 * A duration for people to read, two units at most: `850ms`, `12.3s`, `5m 02s`, `3h 04m`,
 * `2d 03h`. Used by the CLI's tables and the dashboard.
 */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`
  if (ms < 60_000) return ms % 1000 === 0 ? `${ms / 1000}s` : `${(ms / 1000).toFixed(1)}s`
  const pad = (n: number) => String(n).padStart(2, '0')
  const s = Math.floor(ms / 1000)
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`
  return `${Math.floor(s / 86_400)}d ${pad(Math.floor(s / 3600) % 24)}h`
}
