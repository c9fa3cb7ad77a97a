import { describe, expect, it } from 'vitest'
import type { PoolClient } from 'pg'
import type { StreamEvent } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'

// The property the stream design exists for (research/streams.md §1): ids from a sequence become
// visible out of commit order, and a reader that keeps "the last position I read" must still see
// every event that commits late. Readers here keep exactly that: per partition, the last offset,
// and read after it while appenders commit in random order.

const t = useTestSchema()
const PARTITIONS = 3

/** A reader in the style of every group member: per partition, read after the last offset seen. */
class TailReader {
  readonly seen: StreamEvent<{ tag: string }>[] = []
  private readonly last = Array.from({ length: PARTITIONS }, () => '0')

  constructor(private readonly stream: string) {}

  async poll(): Promise<number> {
    let got = 0
    for (let p = 0; p < PARTITIONS; p++) {
      const events = await t.postbox.readStream<{ tag: string }>(this.stream, { partition: p, after: this.last[p], limit: 500 })
      for (const e of events) {
        // Offsets are dense: the next event of a partition is always last + 1.
        expect(BigInt(e.offset)).toBe(BigInt(this.last[p]!) + 1n)
        this.last[p] = e.offset
        this.seen.push(e)
      }
      got += events.length
    }
    return got
  }

  tags(): string[] {
    return this.seen.map((e) => e.payload.tag).sort()
  }
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function inTransaction(fn: (client: PoolClient) => Promise<void>, commit: boolean): Promise<void> {
  const client = await t.pool.connect()
  try {
    await client.query('BEGIN')
    await fn(client)
    await client.query(commit ? 'COMMIT' : 'ROLLBACK')
  } catch (error) {
    await client.query('ROLLBACK')
    throw error
  } finally {
    client.release()
  }
}

describe('no reader ever skips an event', () => {
  it('many transactions committing in random order, rollbacks among them: every committed event once, dense offsets, nothing rolled back', async () => {
    await t.postbox.createStream('interleaved', { partitions: PARTITIONS })
    const readers = [new TailReader('interleaved'), new TailReader('interleaved'), new TailReader('interleaved')]
    const committed: string[] = []
    let writing = true
    // Readers poll all along, racing the appenders and each other's stamp rounds.
    const reading = readers.map(async (reader) => {
      while (writing) {
        if ((await reader.poll()) === 0) await pause(Math.random() * 10)
      }
    })
    const WRITERS = 8
    const TRANSACTIONS = 25
    const writers = Array.from({ length: WRITERS }, async (_, w) => {
      for (let i = 0; i < TRANSACTIONS; i++) {
        const commit = Math.random() >= 0.2
        const tags = Array.from({ length: 1 + Math.floor(Math.random() * 3) }, (_, k) => `w${w}-t${i}-e${k}`)
        await inTransaction(async (client) => {
          // Draw ids early, then hold the transaction open a random while so that later ids commit first.
          for (const tag of tags) await t.postbox.append('interleaved', { tag }, { key: `k${Math.floor(Math.random() * 20)}`, tx: client })
          await pause(Math.random() * 60)
        }, commit)
        if (commit) committed.push(...tags)
      }
    })
    await Promise.all(writers)
    // Everything committed: drain the readers to the end.
    writing = false
    await Promise.all(reading)
    for (const reader of readers) {
      await waitFor('the reader to reach every committed event', async () => (await reader.poll(), reader.seen.length >= committed.length))
      await reader.poll()
      expect(reader.tags()).toEqual([...committed].sort()) // each committed event exactly once, nothing rolled back
    }
    // The heads are the counts: no offset was used up by a rollback.
    const stats = await t.postbox.streamStats('interleaved')
    expect(stats.reduce((sum, row) => sum + Number(row.headOffset), 0)).toBe(committed.length)
    expect(stats.every((row) => row.unstamped === 0)).toBe(true)
  })

  it('an appending transaction left open holds back nothing: later events are read meanwhile, and its own come after them', async () => {
    await t.postbox.createStream('long-open')
    const reader = new TailReader('long-open')
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    let appended!: () => void
    const drawn = new Promise<void>((resolve) => (appended = resolve))
    const longOpen = inTransaction(async (client) => {
      await t.postbox.append('long-open', { tag: 'early-id' }, { tx: client })
      appended()
      await released
    }, true)
    await drawn // the open transaction has drawn its id
    for (let i = 0; i < 20; i++) await t.postbox.append('long-open', { tag: `later-${String(i).padStart(2, '0')}` })
    await waitFor('the events committed after the open transaction began', async () => (await reader.poll(), reader.seen.length === 20))
    expect(reader.seen.map((e) => e.offset)).toEqual(Array.from({ length: 20 }, (_, i) => String(i + 1)))
    release()
    await longOpen
    await waitFor('the late committer', async () => (await reader.poll(), reader.seen.length === 21))
    const late = reader.seen[20]!
    expect(late.payload.tag).toBe('early-id')
    expect(late.offset).toBe('21') // after every event that became visible before it
    expect(BigInt(late.id)).toBeLessThan(BigInt(reader.seen[0]!.id)) // although its id is the oldest
  })

  it('a rolled-back append leaves no hole that stalls anyone', async () => {
    await t.postbox.createStream('rollback')
    await inTransaction(async (client) => {
      await t.postbox.append('rollback', { tag: 'never' }, { tx: client })
    }, false)
    await t.postbox.append('rollback', { tag: 'after' })
    const events = await t.postbox.readStream<{ tag: string }>('rollback')
    expect(events.map((e) => [e.offset, e.payload.tag])).toEqual([['1', 'after']])
  })

  it('causal order: an event appended after another was seen committed gets a larger offset', async () => {
    await t.postbox.createStream('causal', { partitions: 2 })
    for (let i = 0; i < 30; i++) {
      await t.postbox.append('causal', { tag: `a${i}` }, { key: 'same' })
      await t.postbox.append('causal', { tag: `b${i}` }, { key: 'same' })
    }
    const { partition } = await t.postbox.append('causal', { tag: 'probe' }, { key: 'same' })
    const events = await t.postbox.readStream<{ tag: string }>('causal', { partition, limit: 1000 })
    const tags = events.map((e) => e.payload.tag)
    expect(tags).toEqual([...Array.from({ length: 30 }, (_, i) => [`a${i}`, `b${i}`]).flat(), 'probe'])
  })
})
