import type { MessageRow } from '../queries/message-row.js'
import { decodePayload } from './payload-codec.js'

/**
 * One delivery of a message. `lease` is the fencing token of this delivery: ack, nack and extend
 * present it, and fail with `LeaseLostError` once the message was delivered to someone else.
 */
export interface Message<P = unknown> {
  readonly id: string
  readonly queue: string
  readonly payload: P
  readonly headers: Readonly<Record<string, string>>
  /** 1 on the first delivery, 2 on the second, ... */
  readonly attempt: number
  readonly priority: number
  readonly groupKey: string | null
  readonly dedupeKey: string | null
  readonly enqueuedAt: Date
  /** When this delivery was claimed (database time). */
  readonly claimedAt: Date
  /** When this delivery's lease runs out unless extended (database time). */
  readonly leaseExpiresAt: Date
  readonly lease: string
  /** The error recorded by the previous failed attempt, if any. */
  readonly lastError: string | null
  /** The routing key it was published with (`publish`); null when it was sent to this queue. */
  readonly routingKey: string | null
}

/** The fields a completion needs; a whole {@link Message} fits. */
export type Delivery = Pick<Message, 'id' | 'lease'>

export function messageFromRow<P>(row: MessageRow, payload: P = decodePayload(row) as P): Message<P> {
  return {
    id: row.id,
    queue: row.queue,
    payload,
    headers: row.headers ?? {},
    attempt: row.attempt,
    priority: row.priority,
    groupKey: row.group_key,
    dedupeKey: row.dedupe_key,
    enqueuedAt: new Date(row.enqueued_ms),
    claimedAt: new Date(row.claimed_ms),
    leaseExpiresAt: new Date(row.available_ms),
    lease: row.lease as string,
    lastError: row.last_error,
    routingKey: row.routing_key,
  }
}
