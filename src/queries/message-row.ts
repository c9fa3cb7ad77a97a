/** A row of `<schema>.messages`, as pg returns it. */
export interface MessageRow {
  id: string
  queue: string
  priority: number
  available_at: Date
  attempt: number
  lease: string | null
  encoding: 'json' | 'text' | 'binary'
  payload: unknown
  body: Buffer | null
  headers: Record<string, string> | null
  dedupe_key: string | null
  group_key: string | null
  enqueued_at: Date
  claimed_at: Date | null
  last_error: string | null
  original_queue: string | null
  original_attempt: number | null
  dead_at: Date | null
}
