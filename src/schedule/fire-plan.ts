import type { CronSpec } from './cron-spec.js'

/** What happens to ticks that passed while no scheduler ran: see {@link planFires}. */
export type MissedPolicy = 'skip' | 'latest' | 'all'

/** The ticks to fire now and the next tick to wait for (null: the expression fires no more). */
export interface FirePlan {
  fires: Date[]
  next: Date | null
}

/** Ticks one transaction fires at most under `missed: 'all'`; the rest follow in the next ones. */
export const MAX_FIRES_PER_TICK = 1000

/** How late a tick may fire and still count as on time under `missed: 'skip'`, at most. */
export const ON_TIME_MAX_MS = 60_000

/**
 * Decides which ticks of a due schedule to fire at `now` (the database clock), `due` being its
 * next_fire_at (≤ now). Every tick from `due` to `now` passed unfired. With `'all'` each of them
 * fires (at most {@link MAX_FIRES_PER_TICK} at once, then the next ones). With `'latest'` only the
 * most recent fires: on time that is the tick just due, after downtime one catch-up fire. With
 * `'skip'` the most recent fires only if it is on time, that is late by less than half the time
 * to the tick after it and less than {@link ON_TIME_MAX_MS}: a tick that passed while nothing ran
 * is dropped, one that a running scheduler reached a moment late is not.
 */
export function planFires(spec: CronSpec, due: Date, now: Date, missed: MissedPolicy): FirePlan {
  if (missed === 'all') {
    const fires: Date[] = []
    for (let tick: Date | null = due; tick !== null && tick <= now && fires.length < MAX_FIRES_PER_TICK; tick = spec.nextAfter(tick)) {
      fires.push(tick)
    }
    const last = fires.at(-1) ?? due
    return { fires, next: fires.length === MAX_FIRES_PER_TICK ? spec.nextAfter(last) : spec.nextAfter(now) }
  }
  const next = spec.nextAfter(now)
  const latest = spec.latestAtOrBefore(now)
  // The expression may have changed its mind about `due` (never, with a pinned croner); fire `due`.
  const tick = latest !== null && latest >= due ? latest : due
  if (missed === 'latest') return { fires: [tick], next }
  const period = (spec.nextAfter(tick)?.getTime() ?? Infinity) - tick.getTime()
  const lateMs = now.getTime() - tick.getTime()
  return { fires: lateMs <= Math.min(ON_TIME_MAX_MS, period / 2) ? [tick] : [], next }
}
