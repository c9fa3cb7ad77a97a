import { Cron } from 'croner'
import { InvalidScheduleError } from '../errors.js'

/** Five fields (minute to day of week), or six with seconds first; or a nickname such as `@daily`. */
const FIELDS = /^\S+(?:\s+\S+){4,5}$/
const NICKNAME = /^@(?:yearly|annually|monthly|weekly|daily|midnight|hourly)$/i

/**
 * A cron expression read in an IANA time zone, behind which sits croner (pinned: the daylight-
 * saving rules below are its, and changed between its major versions). The rules, asserted by
 * test/schedule-dst.test.ts: a time that does not exist (the spring gap) fires once at the first
 * instant after the gap for an expression with one fixed second, minute and hour (`30 2 * * *`
 * in New York fires at 03:00 EDT), and is skipped by one with a wildcard, list or step in those
 * fields (`0,30 2 * * *`); a time that occurs twice (the autumn overlap) fires once for a fixed
 * time and at both occurrences for a wildcard, whose ticks keep their spacing in absolute time.
 */
export class CronSpec {
  private readonly cron: Cron

  private constructor(
    readonly expression: string,
    readonly timezone: string,
  ) {
    this.cron = new Cron(expression, { timezone, mode: '5-or-6-parts' })
  }

  /**
   * Parses an expression in a time zone; throws {@link InvalidScheduleError} for an expression
   * croner refuses, one that never fires, or a time zone that Intl does not know.
   */
  static parse(expression: string, timezone: string): CronSpec {
    const text = expression.trim()
    if (!FIELDS.test(text) && !NICKNAME.test(text)) {
      throw new InvalidScheduleError(
        `invalid cron expression '${expression}': expected 5 fields (minute hour day-of-month month day-of-week), 6 with seconds first, or a nickname such as @daily`,
      )
    }
    assertTimeZone(timezone)
    let spec: CronSpec
    try {
      spec = new CronSpec(text, timezone)
    } catch (error) {
      throw new InvalidScheduleError(`invalid cron expression '${expression}': ${(error as Error).message}`)
    }
    if (spec.nextAfter(new Date()) === null) throw new InvalidScheduleError(`cron expression '${expression}' never fires`)
    return spec
  }

  /** The first tick strictly after `instant`, or null when there is none. */
  nextAfter(instant: Date): Date | null {
    return this.cron.nextRun(instant)
  }

  /** The latest tick at or before `instant`, or null when there is none. */
  latestAtOrBefore(instant: Date): Date | null {
    return this.cron.previousRuns(1, new Date(instant.getTime() + 1))[0] ?? null
  }
}

/** Throws {@link InvalidScheduleError} unless Intl knows the time zone (IANA names, such as `Europe/Paris`, and `UTC`). */
function assertTimeZone(timezone: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone })
  } catch {
    throw new InvalidScheduleError(`unknown time zone '${timezone}': give an IANA name such as 'Europe/Paris' or 'UTC'`)
  }
}
