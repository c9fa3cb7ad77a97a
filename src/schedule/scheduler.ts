import { EventEmitter } from 'node:events'
import { sleep, type BackgroundService } from '../background-loop.js'
import type { Database } from '../db/database.js'
import type { Logger } from '../logger.js'
import { pruneDedupeWindows } from '../queries/dedupe-windows.js'
import * as q from '../queries/schedules.js'
import type { SchemaName } from '../schema-name.js'
import { CronSpec } from './cron-spec.js'
import { planFires } from './fire-plan.js'

/** A tick fired: the schedule, the tick (an instant) and the message it sent. */
export interface FiredTick {
  schedule: string
  fireAt: Date
  messageId: string
}

/** Events of a scheduler: each tick it fired, after its transaction committed. */
export interface SchedulerEvents {
  fired: [tick: FiredTick]
}

/** What `startScheduler()` returns: stop takes this caller's part back (a worker's part stays). */
export interface SchedulerHandle {
  stop(): Promise<void>
}

/** Longest sleep between two looks at the schedules table: a schedule made by another process fires at most this late. */
const MAX_SLEEP_MS = 1_000
/** Shortest sleep when a due schedule is held by another process (it is firing it). */
const MIN_SLEEP_MS = 20
/** How long a schedule whose fire failed (a queue limit lowered under its payload…) is left alone. */
const FAILED_FIRE_BACKOFF_MS = 30_000
/** Schedules one `tick()` fires at most before it looks at the clock again. */
const MAX_SCHEDULES_PER_TICK = 100
/** How often a scheduler deletes expired dedupe windows. */
const PRUNE_EVERY_MS = 60_000

/**
 * Fires due schedules. Every process that takes part runs this loop; there is no leader. Each due
 * schedule is fired in a transaction of its own that locks its row (FOR UPDATE SKIP LOCKED, so
 * processes share the due schedules and never wait for each other), decides the ticks from the
 * database clock (planFires) and calls fire_schedule, which sends and moves next_fire_at in that
 * same transaction: a tick fires once however many processes run, and a crash fires nothing
 * half-way. Between ticks the loop sleeps until the earliest next tick, at most
 * {@link MAX_SLEEP_MS}.
 *
 * It runs while someone takes part: `startScheduler()` callers and running workers each join and
 * leave. It also deletes expired dedupe windows once a minute.
 */
export class Scheduler extends EventEmitter<SchedulerEvents> implements BackgroundService {
  private participants = 0
  private loop: Promise<void> | undefined
  private stopping = new AbortController()
  private nudge = new AbortController()
  private readonly specs = new Map<string, CronSpec>()
  /** Schedules whose last fire failed, and the local time until which they are left alone. */
  private readonly failed = new Map<string, number>()
  private lastPrune = 0
  private closed = false

  constructor(
    private readonly db: Database,
    private readonly s: SchemaName,
    private readonly logger: Logger,
  ) {
    super()
  }

  /** Takes part until the handle is stopped; stop waits for the loop to end when it was the last part. */
  join(): SchedulerHandle {
    this.participants++
    this.start()
    let left = false
    return {
      stop: async () => {
        if (!left) {
          left = true
          this.participants--
        }
        if (this.participants === 0) await this.stop()
      },
    }
  }

  /** Starts the loop if it is not running and someone takes part. */
  start(): void {
    if (this.loop || this.participants === 0 || this.closed) return
    this.stopping = new AbortController()
    const stopping = this.stopping.signal
    this.loop = this.run(stopping).finally(() => {
      this.loop = undefined
      // Someone joined while the loop was ending: run again.
      if (this.participants > 0 && stopping.aborted) this.start()
    })
  }

  /** Stops the loop for good, whoever takes part (Postbox.close()). */
  async close(): Promise<void> {
    this.closed = true
    await this.stop()
  }

  /** Stops the loop, waiting for a fire in progress to commit or roll back. Idempotent; never throws. */
  async stop(): Promise<void> {
    this.stopping.abort()
    this.nudge.abort()
    await this.loop
  }

  /** Makes a sleeping loop look at the schedules now (a schedule was made or changed). */
  poke(): void {
    this.nudge.abort()
  }

  /**
   * Fires every schedule due at `now` (default: the database clock) and returns the ticks fired.
   * The loop calls it; tests call it with a clock of their own.
   */
  async tick(now: Date | null = null): Promise<FiredTick[]> {
    const fired: FiredTick[] = []
    for (let round = 0; round < MAX_SCHEDULES_PER_TICK; round++) {
      let name: string | undefined
      try {
        const result = await this.db.transaction(async (tx) => {
          const due = await q.lockDueSchedule(tx, this.s, now, this.leftAlone())
          if (!due) return undefined
          name = due.name
          const plan = planFires(this.spec(due.cron, due.timezone), due.next_fire_at, due.now, due.missed)
          const rows = await q.fireSchedule(tx, this.s, due.name, plan.fires, plan.next, due.next_fire_at)
          return rows.map((row) => ({ schedule: due.name, fireAt: row.fire_at, messageId: row.message_id }))
        })
        if (!result) break
        this.failed.delete(name as string)
        fired.push(...result)
        for (const tick of result) this.emit('fired', tick)
      } catch (error) {
        if (name === undefined) throw error
        this.failed.set(name, Date.now() + FAILED_FIRE_BACKOFF_MS)
        this.logger.warn({ err: (error as Error).message, schedule: name }, 'postbox: firing a schedule failed; trying it again in 30 s')
      }
    }
    return fired
  }

  private async run(stopping: AbortSignal): Promise<void> {
    let failures = 0
    while (!stopping.aborted) {
      this.nudge = new AbortController()
      let sleepMs: number
      try {
        // One statement when nothing is due; the transactions of tick() only when something is.
        const waitMs = await q.selectWaitMs(this.db, this.s, null, this.leftAlone())
        if (waitMs !== null && waitMs <= 0) {
          const fired = await this.tick()
          // Still due after a tick that fired nothing: another process holds it (it is firing it).
          sleepMs = fired.length > 0 ? 0 : MIN_SLEEP_MS
        } else {
          sleepMs = waitMs === null ? MAX_SLEEP_MS : Math.min(MAX_SLEEP_MS, waitMs + 1)
        }
        if (Date.now() - this.lastPrune > PRUNE_EVERY_MS) {
          this.lastPrune = Date.now()
          await pruneDedupeWindows(this.db, this.s)
        }
        failures = 0
      } catch (error) {
        failures++
        sleepMs = Math.min(30_000, MAX_SLEEP_MS * 2 ** Math.min(failures, 5))
        // Once per run of failures: a worker whose role may not fire schedules (the consumer role
        // of `postbox roles`) would otherwise say so every 30 s.
        const level = failures === 1 ? 'warn' : 'debug'
        this.logger[level]({ err: (error as Error).message }, 'postbox: the scheduler could not read the schedules; trying again (a role without the producer grants cannot fire schedules: scheduleWithWorkers: false)')
      }
      await sleep(sleepMs, AbortSignal.any([stopping, this.nudge.signal]))
    }
  }

  /** The names of schedules whose last fire failed recently. */
  private leftAlone(): string[] {
    const now = Date.now()
    for (const [name, until] of this.failed) if (until <= now) this.failed.delete(name)
    return [...this.failed.keys()]
  }

  /** The parsed expression, cached: a schedule with a per-second tick should not be parsed every second. */
  private spec(cron: string, timezone: string): CronSpec {
    const key = `${timezone} ${cron}`
    let spec = this.specs.get(key)
    if (!spec) {
      spec = CronSpec.parse(cron, timezone)
      if (this.specs.size > 1000) this.specs.clear()
      this.specs.set(key, spec)
    }
    return spec
  }
}
