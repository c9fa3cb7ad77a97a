import type { Executor } from '../db/executor.js'
import * as q from '../queries/streams.js'
import type { SchemaName } from '../schema-name.js'
import { parseOptions } from '../validation.js'
import { eventFromRow, type StreamEvent } from './stream-event.js'
import { assertStreamName } from './stream-name.js'
import { readStreamOptionsSchema, type ReadStreamOptions } from './stream-options.js'

/**
 * Gives offsets to what committed since the last stamp round (see stamp_stream in
 * migrations/0010_streams.sql): runs rounds until one finds nothing more or another reader holds
 * the stream. Every reader calls it before reading, so events become readable without a
 * background process; a stamping failure is left for the next reader.
 */
export async function stamp(db: Executor, s: SchemaName, stream: string): Promise<void> {
  for (let round = 0; round < 20; round++) {
    const stamped = await q.stampStream(db, s, stream)
    if (stamped === null || stamped < 5000) return
  }
}

/**
 * Stamps like {@link stamp}, but when another reader holds the stream's round, waits for it to
 * end and runs a round of its own: a round sees everything committed before its lock, so an
 * event appended and committed before this call is stamped when it returns (read your writes).
 * Group members need not wait: the holder's round wakes them.
 */
async function stampOwnRound(db: Executor, s: SchemaName, stream: string): Promise<void> {
  for (;;) {
    const stamped = await q.stampStream(db, s, stream)
    if (stamped !== null) {
      if (stamped >= 5000) await stamp(db, s, stream)
      return
    }
    await q.awaitStampRound(db, s, stream)
  }
}

/**
 * Reads one partition after an offset, without a group (ad-hoc replay). It stamps first, with a
 * round of its own, so it sees every event whose append committed before the call.
 */
export async function readStream<P>(db: Executor, s: SchemaName, stream: string, options?: ReadStreamOptions): Promise<StreamEvent<P>[]> {
  assertStreamName(stream)
  const o = parseOptions(readStreamOptionsSchema, options, 'readStream options')
  await stampOwnRound(db, s, stream)
  const rows = await q.selectEvents(db, s, stream, o.partition ?? 0, o.after ?? '0', o.limit ?? 100)
  return rows.map((row) => eventFromRow<P>(stream, row))
}
