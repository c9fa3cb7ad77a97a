import type { EventRow } from '../queries/streams.js'
import { decodePayload } from '../queue/payload-codec.js'

/**
 * One event of a stream. `offset` is its position in its partition: offsets are strings of
 * integers, dense (1, 2, 3, ...), increasing in the order events became visible, never reused.
 * `id` is unique across the stream's events and tells nothing about order.
 */
export interface StreamEvent<P = unknown> {
  readonly stream: string
  readonly partition: number
  readonly offset: string
  readonly id: string
  readonly key: string | null
  readonly payload: P
  readonly headers: Readonly<Record<string, string>>
  /** When the appending transaction ran (database time). */
  readonly appendedAt: Date
  /** When it got its offset: shortly after its transaction committed (database time). */
  readonly stampedAt: Date
}

/** An event from a row of the log. */
export function eventFromRow<P>(stream: string, row: EventRow): StreamEvent<P> {
  return {
    stream,
    partition: row.partition,
    offset: row.offset,
    id: row.id,
    key: row.key,
    payload: decodePayload(row) as P,
    headers: row.headers ?? {},
    appendedAt: row.appended_at,
    stampedAt: row.stamped_at,
  }
}
