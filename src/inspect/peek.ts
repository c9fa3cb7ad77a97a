import { z } from 'zod'
import type { Executor } from '../db/executor.js'
import { InvalidOptionsError, QueueNotFoundError } from '../errors.js'
import { peekMessages, type PeekCursor, type PeekRow } from '../queries/inspect.js'
import { selectQueue } from '../queries/queues.js'
import { assertQueueName } from '../queue-name.js'
import type { SchemaName } from '../schema-name.js'
import { parseOptions } from '../validation.js'

/** A message as an operator sees it, read without claiming it. */
export interface PeekedMessage {
  id: string
  queue: string
  /** ready (claimable now, including an expired lease), delayed, or in_flight (leased). */
  state: 'ready' | 'delayed' | 'in_flight'
  priority: number
  attempt: number
  encoding: 'json' | 'text' | 'binary'
  /** The payload: JSON as it was sent, text as a string, binary as base64. */
  payload: unknown
  headers: Record<string, string>
  dedupeKey: string | null
  groupKey: string | null
  lastError: string | null
  /** Set on a dead letter: the queue it came from and the deliveries it had there. */
  originalQueue: string | null
  originalAttempt: number | null
  enqueuedAt: Date
  availableAt: Date
  claimedAt: Date | null
  deadAt: Date | null
}

/** A page of peeked messages, and the cursor of the next page (null at the end). */
export interface PeekPage {
  messages: PeekedMessage[]
  next: string | null
}

/** Options of `peek`. */
export interface PeekOptions {
  /** At most this many messages (1 to 1000, default 20). */
  limit?: number
  /** The `next` of the previous page. */
  after?: string
  /** The queue's dead letters (in its dead-letter queue) instead of its own messages. */
  dead?: boolean
}

const peekOptionsSchema = z.strictObject({
  limit: z.number().int().min(1).max(1000).optional(),
  after: z.string().max(400).optional(),
  dead: z.boolean().optional(),
})

const cursorSchema = z.tuple([z.number().int(), z.string().min(1).max(64), z.string().regex(/^\d{1,19}$/)])

function encodeCursor(row: PeekRow): string {
  return Buffer.from(JSON.stringify([row.priority, row.available_key, row.id])).toString('base64url')
}

function decodeCursor(text: string): PeekCursor {
  try {
    const [priority, availableAt, id] = cursorSchema.parse(JSON.parse(Buffer.from(text, 'base64url').toString('utf8')))
    return { priority, availableAt, id }
  } catch {
    throw new InvalidOptionsError(`invalid cursor ${JSON.stringify(text.slice(0, 40))}: pass the 'next' of a previous page`)
  }
}

function peeked(row: PeekRow): PeekedMessage {
  return {
    id: row.id,
    queue: row.queue,
    state: row.state,
    priority: row.priority,
    attempt: row.attempt,
    encoding: row.encoding,
    payload: row.encoding === 'json' ? row.payload : (row.body as Buffer).toString(row.encoding === 'text' ? 'utf8' : 'base64'),
    headers: row.headers ?? {},
    dedupeKey: row.dedupe_key,
    groupKey: row.group_key,
    lastError: row.last_error,
    originalQueue: row.original_queue,
    originalAttempt: row.original_attempt,
    enqueuedAt: row.enqueued_at,
    availableAt: row.available_at,
    claimedAt: row.claimed_at,
    deadAt: row.dead_at,
  }
}

/**
 * Reads a queue's messages in delivery order without claiming them: a plain SELECT, no lock, no
 * lease or attempt changed. With `dead`, the queue's dead letters (the messages in its
 * dead-letter queue that came from it). Pages with `after`, the `next` of the page before.
 */
export async function peek(db: Executor, s: SchemaName, queue: string, options?: PeekOptions): Promise<PeekPage> {
  assertQueueName(queue)
  const o = parseOptions(peekOptionsSchema, options, 'peek options')
  const cursor = o.after === undefined ? null : decodeCursor(o.after)
  const info = await selectQueue(db, s, queue)
  if (!info) throw new QueueNotFoundError(queue)
  let target = queue
  if (o.dead) {
    if (info.dead_letter === null) throw new InvalidOptionsError(`queue '${queue}' has no dead letter (deadLetter: false)`)
    target = info.dead_letter
  }
  const limit = o.limit ?? 20
  // One row more than asked says whether there is a next page.
  const rows = await peekMessages(db, s, { queue: target, originalQueue: o.dead ? queue : null, cursor, limit: limit + 1 })
  const page = rows.slice(0, limit)
  const last = page[page.length - 1]
  return { messages: page.map(peeked), next: rows.length > limit && last ? encodeCursor(last) : null }
}
