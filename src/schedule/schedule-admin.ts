import type { Database } from '../db/database.js'
import { InvalidPayloadError, InvalidScheduleError } from '../errors.js'
import * as q from '../queries/schedules.js'
import { queueNameOf } from '../queue/define-queue.js'
import { validatePayload } from '../queue/producer.js'
import { QUEUE_NAME } from '../queue-name.js'
import type { SchemaName } from '../schema-name.js'
import { parseOptions } from '../validation.js'
import { CronSpec } from './cron-spec.js'
import { scheduleOptionsSchema, type ScheduleInfo, type ScheduleOptions } from './schedule-options.js'

/** Returns the name if it is a valid schedule name (the queue-name rules), else throws. */
function assertScheduleName(name: unknown): string {
  if (typeof name === 'string' && QUEUE_NAME.test(name)) return name
  throw new InvalidScheduleError(
    `invalid schedule name ${JSON.stringify(String(name).slice(0, 80))}: use 1-63 characters of a-z, 0-9, _ . : - starting with a letter or digit`,
  )
}

function jsonText(payload: unknown): string {
  if (payload instanceof Uint8Array) throw new InvalidPayloadError('a scheduled payload is JSON: text and binary payloads cannot be scheduled')
  let text: string | undefined
  try {
    text = JSON.stringify(payload)
  } catch (error) {
    throw new InvalidPayloadError(`payload is not JSON-serialisable: ${(error as Error).message}`)
  }
  if (text === undefined) throw new InvalidPayloadError('payload is not JSON-serialisable')
  return text
}

/** A stored schedule as the API returns it. */
export function scheduleInfo(row: q.ScheduleRow): ScheduleInfo {
  return {
    name: row.name,
    queue: row.queue,
    cron: row.cron,
    timezone: row.timezone,
    payload: row.payload,
    headers: row.headers,
    priority: row.priority,
    missed: row.missed,
    nextFireAt: row.next_fire_at,
    lastFireAt: row.last_fire_at,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  }
}

/**
 * Schedule administration: create or replace, delete, list. Everything is checked before
 * anything is written: the name, the options, the expression and time zone (croner, Intl), and
 * the message against its queue (existence, payload size, a typed queue's schema).
 */
export class ScheduleAdmin {
  constructor(
    private readonly db: Database,
    private readonly s: SchemaName,
  ) {}

  async schedule(name: string, options: ScheduleOptions): Promise<ScheduleInfo> {
    assertScheduleName(name)
    const o = parseOptions(scheduleOptionsSchema, options, 'schedule options')
    const timezone = o.timezone ?? 'UTC'
    const spec = CronSpec.parse(o.cron, timezone)
    const queue = queueNameOf(o.queue)
    const payload = jsonText(validatePayload(o.queue, o.payload === undefined ? {} : o.payload))
    const headers = o.headers ? JSON.stringify(o.headers) : null
    const priority = o.priority ?? 0
    return this.db.transaction(async (tx) => {
      await q.checkScheduledMessage(tx, this.s, queue, payload, headers, priority)
      const next = spec.nextAfter(await q.selectNow(tx, null))
      const row = await q.upsertSchedule(tx, this.s, {
        name, queue, cron: spec.expression, timezone, payload, headers, priority, missed: o.missed ?? 'latest', next,
      })
      return scheduleInfo(row)
    })
  }

  async unschedule(name: string): Promise<boolean> {
    return q.deleteSchedule(this.db, this.s, assertScheduleName(name))
  }

  async list(): Promise<ScheduleInfo[]> {
    return (await q.selectSchedules(this.db, this.s)).map(scheduleInfo)
  }
}
