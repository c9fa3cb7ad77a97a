/**
 * A claimed message as the receive statement returns it: the columns a delivery needs, with its
 * times as whole epoch milliseconds (exact in float8), far cheaper to read than timestamp text.
 */
export interface MessageRow {
  id: string
  queue: string
  priority: number
  attempt: number
  lease: string | null
  encoding: 'json' | 'text' | 'binary'
  payload: unknown
  body: Buffer | null
  headers: Record<string, string> | null
  dedupe_key: string | null
  group_key: string | null
  last_error: string | null
  /** The routing key of a published message; null for a plain send. */
  routing_key: string | null
  enqueued_ms: number
  claimed_ms: number
  /** The lease expiry while in flight. */
  available_ms: number
}
