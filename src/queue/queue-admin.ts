import { z } from 'zod'
import type { Database } from '../db/database.js'
import type { Executor } from '../db/executor.js'
import { InvalidOptionsError, InvalidQueueNameError, QueueNotEmptyError, QueueNotFoundError } from '../errors.js'
import * as flow from '../queries/flow.js'
import * as q from '../queries/queues.js'
import { assertQueueName } from '../queue-name.js'
import type { SchemaName } from '../schema-name.js'
import { parseOptions } from '../validation.js'
import { DEFAULT_SETTINGS, flowLimitsDiffer, mergeSettings, queueInfo, queueOptionsSchema, type QueueInfo, type QueueOptions } from './queue-options.js'

const deleteOptionsSchema = z.strictObject({ purge: z.boolean().optional() })

/** The dead letter a queue gets by default: `<name>.dead`, when that is still a valid name. */
function defaultDeadLetter(name: string): string {
  const dead = `${name}.dead`
  try {
    return assertQueueName(dead)
  } catch {
    throw new InvalidQueueNameError(`queue name '${name}' is too long to derive its dead letter '${dead}': pass deadLetter explicitly, or false`)
  }
}

function resolveDeadLetter(name: string, option: string | false | undefined, current: () => string | null): string | null {
  if (option === false) return null
  // Lazy: a name too long for '<name>.dead' is fine when the caller names its dead letter.
  if (option === undefined) return current()
  const dead = assertQueueName(option)
  if (dead === name) throw new InvalidOptionsError(`queue '${name}' cannot be its own dead letter`)
  return dead
}

/** Creates the dead-letter queue if it does not exist; dead letters of a dead letter are dropped. */
async function ensureDeadLetterQueue(tx: Executor, s: SchemaName, dead: string | null): Promise<void> {
  if (dead !== null) await q.insertQueue(tx, s, dead, DEFAULT_SETTINGS)
}

/**
 * Queue administration: create (idempotent), update, get, list and delete. Options are validated
 * with zod before any statement runs.
 */
export class QueueAdmin {
  constructor(
    private readonly db: Database,
    private readonly s: SchemaName,
  ) {}

  async create(name: string, options?: QueueOptions): Promise<QueueInfo> {
    assertQueueName(name)
    const parsed = parseOptions(queueOptionsSchema, options, 'queue options')
    const isDeadLetterQueue = name.endsWith('.dead') && parsed.deadLetter === undefined
    const dead = resolveDeadLetter(name, parsed.deadLetter, () => (isDeadLetterQueue ? null : defaultDeadLetter(name)))
    const settings = mergeSettings(DEFAULT_SETTINGS, parsed, dead)
    return this.db.transaction(async (tx) => {
      if (await q.insertQueue(tx, this.s, name, settings)) {
        await ensureDeadLetterQueue(tx, this.s, dead)
        if (flowLimitsDiffer(settings, DEFAULT_SETTINGS)) await q.setFlowLimits(tx, this.s, name, settings)
        return queueInfo((await q.selectQueue(tx, this.s, name)) as q.QueueRow)
      }
      // Like SQS's CreateQueue: asking again with the same settings is fine, different ones are
      // a mistake that updateQueue exists for, not something to ignore silently.
      const existing = (await q.selectQueue(tx, this.s, name)) as q.QueueRow
      const wanted = mergeSettings(existing, parsed, resolveDeadLetter(name, parsed.deadLetter, () => existing.dead_letter))
      const differing = (Object.keys(wanted) as (keyof q.QueueSettings)[]).filter((key) => wanted[key] !== existing[key])
      if (differing.length > 0) {
        throw new InvalidOptionsError(
          `queue '${name}' exists with other settings (${differing.join(', ')}): change them with updateQueue(), or call createQueue() with the same options`,
        )
      }
      return queueInfo(existing)
    })
  }

  async update(name: string, options: QueueOptions): Promise<QueueInfo> {
    assertQueueName(name)
    const parsed = parseOptions(queueOptionsSchema, options, 'queue options')
    return this.db.transaction(async (tx) => {
      const current = await q.selectQueue(tx, this.s, name, true)
      if (!current) throw new QueueNotFoundError(name)
      const dead = resolveDeadLetter(name, parsed.deadLetter, () => current.dead_letter)
      await ensureDeadLetterQueue(tx, this.s, dead)
      const settings = mergeSettings(current, parsed, dead)
      await q.updateQueue(tx, this.s, name, settings)
      if (flowLimitsDiffer(settings, current)) await q.setFlowLimits(tx, this.s, name, settings)
      return queueInfo((await q.selectQueue(tx, this.s, name)) as q.QueueRow)
    })
  }

  async get(name: string): Promise<QueueInfo | null> {
    assertQueueName(name)
    const row = await q.selectQueue(this.db, this.s, name)
    return row ? queueInfo(row) : null
  }

  async list(): Promise<QueueInfo[]> {
    return (await q.selectQueues(this.db, this.s)).map(queueInfo)
  }

  /** Pauses a queue (see `Postbox.pauseQueue`); false when it was paused already. */
  async pause(name: string): Promise<boolean> {
    return flow.pauseQueue(this.db, this.s, assertQueueName(name))
  }

  /** Resumes a paused queue and wakes its idle consumers; false when it was not paused. */
  async resume(name: string): Promise<boolean> {
    return flow.resumeQueue(this.db, this.s, assertQueueName(name))
  }

  /** Deletes every message of a queue (waiting, delayed and in flight), keeping the queue; returns how many. */
  async purge(name: string): Promise<number> {
    assertQueueName(name)
    if (!(await q.selectQueue(this.db, this.s, name))) throw new QueueNotFoundError(name)
    return q.purgeMessages(this.db, this.s, name)
  }

  /**
   * Deletes a queue. Refuses one that still holds messages unless `purge` is set, and one that
   * another queue uses as its dead letter. Its default dead letter `<name>.dead` goes with it
   * when nothing else uses it (and, unless purging, when it is empty).
   */
  async delete(name: string, options?: { purge?: boolean }): Promise<void> {
    assertQueueName(name)
    const { purge = false } = parseOptions(deleteOptionsSchema, options, 'deleteQueue options')
    await this.db.transaction(async (tx) => {
      const queue = await q.selectQueue(tx, this.s, name, true)
      if (!queue) throw new QueueNotFoundError(name)
      const users = (await q.selectQueuesDeadLetteringInto(tx, this.s, name)).filter((user) => user !== name)
      if (users.length > 0) {
        throw new InvalidOptionsError(`queue '${name}' is the dead letter of ${users.join(', ')}: change their deadLetter first`)
      }
      const targets = [name]
      const dead = queue.dead_letter
      if (dead === `${name}.dead`) {
        const deadUsers = await q.selectQueuesDeadLetteringInto(tx, this.s, dead)
        if (deadUsers.every((user) => user === name)) targets.push(dead)
      }
      for (const target of targets) {
        await q.lockQueueAgainstSenders(tx, this.s, target)
        const count = await q.countMessages(tx, this.s, target)
        if (count > 0 && !purge) {
          throw new QueueNotEmptyError(`queue '${target}' holds ${count} messages: pass { purge: true } to delete them with the queue`)
        }
      }
      for (const target of targets) await q.deleteQueue(tx, this.s, target)
    })
  }
}
