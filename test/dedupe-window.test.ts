import { beforeAll, describe, expect, it } from 'vitest'
import { InvalidOptionsError, type Postbox } from '../src/index.js'
import { waitFor } from './support/wait-for.js'
import { useTestSchema } from './support/test-schema.js'

const t = useTestSchema()
const s = () => `"${t.schema}"`

/** Ends the window of a key now, as if its time had passed (the window is read from the database clock). */
async function expireWindow(queue: string, key: string): Promise<void> {
  await t.sql(`UPDATE ${s()}.dedupe_windows SET expires_at = now() - interval '1 millisecond' WHERE queue = $1 AND dedupe_key = $2`, [queue, key])
}

async function receiveAndAck(postbox: Postbox, queue: string): Promise<string> {
  const [m] = await postbox.receive(queue)
  await postbox.ack(m!)
  return m!.id
}

beforeAll(async () => {
  await t.postbox.createQueue('windowed', { dedupeWindow: '5m' })
  await t.postbox.createQueue('plain')
})

describe('dedupeWindow', () => {
  it('is part of the queue settings: created, read, changed and removed', async () => {
    expect(await t.postbox.getQueue('windowed')).toMatchObject({ dedupeWindow: 300_000 })
    expect(await t.postbox.getQueue('plain')).toMatchObject({ dedupeWindow: false })
    await t.postbox.createQueue('changing')
    expect(await t.postbox.updateQueue('changing', { dedupeWindow: '10s' })).toMatchObject({ dedupeWindow: 10_000 })
    expect(await t.postbox.updateQueue('changing', { dedupeWindow: false })).toMatchObject({ dedupeWindow: false })
  })

  it('refuses a window that is not a positive duration, and writes nothing', async () => {
    for (const dedupeWindow of [0, -1, '0s', 'soon', true]) {
      await expect(t.postbox.createQueue('never', { dedupeWindow: dedupeWindow as never }), String(dedupeWindow)).rejects.toBeInstanceOf(InvalidOptionsError)
      await expect(t.postbox.updateQueue('plain', { dedupeWindow: dedupeWindow as never })).rejects.toBeInstanceOf(InvalidOptionsError)
    }
    expect(await t.postbox.getQueue('never')).toBeNull()
    expect(await t.postbox.getQueue('plain')).toMatchObject({ dedupeWindow: false })
  })

  it('within the window an acked key is a duplicate of its send; after it, a new message', async () => {
    const first = await t.postbox.send('windowed', { n: 1 }, { dedupeKey: 'order:1' })
    expect(first.duplicate).toBe(false)
    expect(await receiveAndAck(t.postbox, 'windowed')).toBe(first.id)
    expect(await t.postbox.send('windowed', { n: 2 }, { dedupeKey: 'order:1' })).toEqual({ id: first.id, duplicate: true })
    expect(await t.postbox.receive('windowed')).toEqual([])
    await expireWindow('windowed', 'order:1')
    const later = await t.postbox.send('windowed', { n: 3 }, { dedupeKey: 'order:1' })
    expect(later).toEqual({ id: expect.not.stringMatching(`^${first.id}$`), duplicate: false })
    expect(await receiveAndAck(t.postbox, 'windowed')).toBe(later.id)
  })

  it('a key is refused within the window when its message went to the dead letter too', async () => {
    await t.postbox.createQueue('failing', { dedupeWindow: '5m', maxAttempts: 1 })
    const first = await t.postbox.send('failing', 'fails', { dedupeKey: 'doomed' })
    const [m] = await t.postbox.receive('failing')
    expect(m!.id).toBe(first.id)
    expect(await t.postbox.nack(m!)).toBe('dead')
    expect(await t.postbox.send('failing', 'again', { dedupeKey: 'doomed' })).toEqual({ id: first.id, duplicate: true })
  })

  it('a message still pending after its window keeps its key (the while-pending rule), and the window is not restarted by the refusal', async () => {
    const first = await t.postbox.send('windowed', 'slow', { dedupeKey: 'slow' })
    await expireWindow('windowed', 'slow')
    expect(await t.postbox.send('windowed', 'again', { dedupeKey: 'slow' })).toEqual({ id: first.id, duplicate: true })
    expect(await t.sql(`SELECT 1 FROM ${s()}.dedupe_windows WHERE dedupe_key = 'slow' AND expires_at > now()`)).toEqual([])
    expect(await receiveAndAck(t.postbox, 'windowed')).toBe(first.id)
    expect((await t.postbox.send('windowed', 'now', { dedupeKey: 'slow' })).duplicate).toBe(false)
    await receiveAndAck(t.postbox, 'windowed')
  })

  it('without a window, an acked key can be sent again at once (unchanged)', async () => {
    const first = await t.postbox.send('plain', 1, { dedupeKey: 'k' })
    await receiveAndAck(t.postbox, 'plain')
    expect((await t.postbox.send('plain', 2, { dedupeKey: 'k' })).id).not.toBe(first.id)
    await receiveAndAck(t.postbox, 'plain')
    expect(await t.sql(`SELECT 1 FROM ${s()}.dedupe_windows WHERE queue = 'plain'`)).toEqual([])
  })

  it('sendBatch and a send in a transaction follow the window, within the batch too', async () => {
    const a = await t.postbox.send('windowed', 'a', { dedupeKey: 'batch:a' })
    await receiveAndAck(t.postbox, 'windowed')
    const ids = await t.postbox.sendBatch('windowed', [
      { payload: 'a2', dedupeKey: 'batch:a' }, { payload: 'b', dedupeKey: 'batch:b' }, { payload: 'b2', dedupeKey: 'batch:b' }, 'no key',
    ])
    expect(ids[0]).toBe(a.id)
    expect(ids[2]).toBe(ids[1])
    expect(new Set(ids).size).toBe(3)
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      expect(await t.postbox.send('windowed', 'c', { dedupeKey: 'batch:b', tx: client })).toEqual({ id: ids[1], duplicate: true })
      await client.query('COMMIT')
    } finally {
      client.release()
    }
    expect(await t.sql(`SELECT count(*)::int AS n FROM ${s()}.messages WHERE queue = 'windowed'`)).toEqual([{ n: 2 }])
    await receiveAndAck(t.postbox, 'windowed')
    await receiveAndAck(t.postbox, 'windowed')
  })

  it('publish follows each queue\'s window: a windowed subscriber refuses the redelivery, a plain one takes it', async () => {
    await t.postbox.createQueue('sub-windowed', { dedupeWindow: '5m' })
    await t.postbox.createQueue('sub-plain')
    await t.postbox.bind('sub-windowed', 'invoice.*')
    await t.postbox.bind('sub-plain', 'invoice.*')
    const first = await t.postbox.publish('invoice.paid', { n: 1 }, { dedupeKey: 'evt_9' })
    expect(first.duplicates).toEqual([])
    for (const queue of ['sub-windowed', 'sub-plain']) await receiveAndAck(t.postbox, queue)
    const again = await t.postbox.publish('invoice.paid', { n: 1 }, { dedupeKey: 'evt_9' })
    expect(again.queues).toEqual(['sub-plain', 'sub-windowed'])
    expect(again.duplicates).toEqual(['sub-windowed'])
    expect(again.ids[again.queues.indexOf('sub-windowed')]).toBe(first.ids[first.queues.indexOf('sub-windowed')])
    expect(again.ids[again.queues.indexOf('sub-plain')]).not.toBe(first.ids[first.queues.indexOf('sub-plain')])
    // A pending copy holds the key in both; the window taken for it is given back.
    const third = await t.postbox.publish('invoice.paid', { n: 1 }, { dedupeKey: 'evt_9' })
    expect([...third.duplicates].sort()).toEqual(['sub-plain', 'sub-windowed'])
    const batch = await t.postbox.publishBatch([{ routingKey: 'invoice.sent', payload: 1, dedupeKey: 'evt_9' }, { routingKey: 'invoice.sent', payload: 2, dedupeKey: 'evt_10' }])
    expect(batch.map((r) => [...r.duplicates].sort())).toEqual([['sub-plain', 'sub-windowed'], []])
    await receiveAndAck(t.postbox, 'sub-plain')
    await receiveAndAck(t.postbox, 'sub-plain')
    await receiveAndAck(t.postbox, 'sub-windowed')
  })

  it('a window that rolls back with its send holds nothing', async () => {
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      await t.postbox.send('windowed', 'x', { dedupeKey: 'rolled', tx: client })
      await client.query('ROLLBACK')
    } finally {
      client.release()
    }
    expect((await t.postbox.send('windowed', 'y', { dedupeKey: 'rolled' })).duplicate).toBe(false)
    await receiveAndAck(t.postbox, 'windowed')
  })

  it('ends by the database clock: a 1s window lets the key through once a second has passed', async () => {
    await t.postbox.createQueue('short', { dedupeWindow: '1s' })
    const first = await t.postbox.send('short', 1, { dedupeKey: 'tick' })
    await receiveAndAck(t.postbox, 'short')
    expect((await t.postbox.send('short', 2, { dedupeKey: 'tick' })).duplicate).toBe(true)
    await waitFor('the window to end', async () =>
      (await t.sql<{ over: boolean }>(`SELECT now() >= expires_at AS over FROM ${s()}.dedupe_windows WHERE dedupe_key = 'tick'`))[0]?.over,
    { timeoutMs: 5_000, intervalMs: 100 })
    const later = await t.postbox.send('short', 3, { dedupeKey: 'tick' })
    expect(later.duplicate).toBe(false)
    expect(later.id).not.toBe(first.id)
  })

  it('many senders of one key while a consumer acks at once: one message', async () => {
    await t.postbox.createQueue('race', { dedupeWindow: '5m' })
    const senders = [t.newPostbox(), t.newPostbox(), t.newPostbox()]
    try {
      let stop = false
      const consumer = (async () => {
        while (!stop) {
          const got = await t.postbox.receive('race', { max: 10 })
          if (got.length > 0) await t.postbox.ack(got)
        }
      })()
      const results = await Promise.all(senders.flatMap((postbox) =>
        Array.from({ length: 30 }, (_, i) => postbox.send('race', i, { dedupeKey: 'once' }))))
      stop = true
      await consumer
      expect(new Set(results.map((r) => r.id)).size).toBe(1)
      expect(results.filter((r) => !r.duplicate)).toHaveLength(1)
    } finally {
      await Promise.all(senders.map((postbox) => postbox.close()))
    }
  })

  it('prune_dedupe_windows deletes expired windows only', async () => {
    await t.postbox.send('windowed', 'p', { dedupeKey: 'prune:old' })
    await t.postbox.send('windowed', 'p', { dedupeKey: 'prune:new' })
    await expireWindow('windowed', 'prune:old')
    const [{ pruned }] = (await t.sql<{ pruned: number }>(`SELECT ${s()}.prune_dedupe_windows() AS pruned`)) as [{ pruned: number }]
    expect(pruned).toBeGreaterThanOrEqual(1)
    const left = await t.sql<{ dedupe_key: string }>(`SELECT dedupe_key FROM ${s()}.dedupe_windows WHERE dedupe_key LIKE 'prune:%'`)
    expect(left).toEqual([{ dedupe_key: 'prune:new' }])
  })
})
