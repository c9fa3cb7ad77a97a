import type { Executor } from '../db/executor.js'
import * as q from '../queries/streams.js'
import * as g from '../queries/streams-groups.js'
import type { SchemaName } from '../schema-name.js'
import { parseOptions } from '../validation.js'
import { assertStreamName } from './stream-name.js'
import { seekSchema, streamOptionsSchema, type SeekTo, type StreamInfo, type StreamOptions } from './stream-options.js'

const SEVEN_DAYS_MS = 7 * 86_400_000

function info(row: q.StreamRow): StreamInfo {
  return { name: row.name, partitions: row.partitions, retentionMs: row.retention_ms, createdAt: row.created_at }
}

/** Creates, reads, deletes and seeks streams; each call is one statement. */
export class StreamAdmin {
  constructor(
    private readonly db: Executor,
    private readonly s: SchemaName,
  ) {}

  /** Creates a stream if it does not exist; an existing stream is returned unchanged. */
  async create(name: string, options?: StreamOptions): Promise<StreamInfo> {
    assertStreamName(name)
    const o = parseOptions(streamOptionsSchema, options, 'stream options')
    return info(await q.createStream(this.db, this.s, name, o.partitions ?? 1, o.retention ?? SEVEN_DAYS_MS))
  }

  /** A stream's settings, or null when there is no such stream. */
  async get(name: string): Promise<StreamInfo | null> {
    const row = await q.selectStream(this.db, this.s, assertStreamName(name))
    return row ? info(row) : null
  }

  /** Every stream, by name. */
  async list(): Promise<StreamInfo[]> {
    return (await q.selectStreams(this.db, this.s)).map(info)
  }

  /** Deletes a stream, its events, groups and offsets; false when there was none. */
  async delete(name: string): Promise<boolean> {
    return q.deleteStream(this.db, this.s, assertStreamName(name))
  }

  /** Moves a group's committed offsets (see `Postbox.seek`); returns how many partitions moved. */
  async seek(stream: string, group: string, to: SeekTo): Promise<number> {
    assertStreamName(stream)
    assertStreamName(group, 'group')
    const target = parseOptions(seekSchema, to, 'seek target')
    const parsed: g.SeekTarget =
      typeof target === 'string' ? { kind: target }
      : 'timestamp' in target ? { kind: 'timestamp', at: target.timestamp }
      : { kind: 'offset', partition: target.partition, offset: target.offset }
    return g.seekGroup(this.db, this.s, stream, group, parsed)
  }
}
