import { describe, expect, it } from 'vitest'
import { InvalidOptionsError, InvalidQueueNameError, QueueNotEmptyError, QueueNotFoundError } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'

const t = useTestSchema()

async function queueNames(): Promise<string[]> {
  return (await t.sql<{ name: string }>(`SELECT name FROM "${t.schema}".queues ORDER BY name`)).map((r) => r.name)
}

describe('createQueue', () => {
  it('creates a queue with defaults and its dead letter <name>.dead', async () => {
    const info = await t.postbox.createQueue('q-defaults')
    expect(info).toMatchObject({
      name: 'q-defaults',
      visibilityTimeout: 30_000,
      maxAttempts: 5,
      backoff: { type: 'exponential', base: 1_000, max: 3_600_000, jitter: true },
      deadLetter: 'q-defaults.dead',
      maxPayloadBytes: 256 * 1024,
      retention: false,
    })
    expect(info.createdAt).toBeInstanceOf(Date)
    const dead = await t.postbox.getQueue('q-defaults.dead')
    // A dead letter has no dead letter of its own.
    expect(dead).toMatchObject({ name: 'q-defaults.dead', deadLetter: false })
  })

  it('stores every setting, durations given as strings', async () => {
    const info = await t.postbox.createQueue('q-custom', {
      visibilityTimeout: '45s',
      maxAttempts: 3,
      backoff: { type: 'fixed', base: '2s', max: '10m', jitter: false },
      deadLetter: 'q-custom-graveyard',
      maxPayloadBytes: 1024,
      retention: '7d',
    })
    const expected = {
      name: 'q-custom',
      visibilityTimeout: 45_000,
      maxAttempts: 3,
      backoff: { type: 'fixed', base: 2_000, max: 600_000, jitter: false },
      deadLetter: 'q-custom-graveyard',
      maxPayloadBytes: 1024,
      retention: 7 * 86_400_000,
    }
    expect(info).toMatchObject(expected)
    expect(await t.postbox.getQueue('q-custom')).toMatchObject(expected)
    expect(await t.postbox.getQueue('q-custom-graveyard')).toMatchObject({ deadLetter: false })
    expect(await queueNames()).not.toContain('q-custom.dead')
  })

  it('deadLetter: false creates no dead-letter queue', async () => {
    expect(await t.postbox.createQueue('q-nodead', { deadLetter: false })).toMatchObject({ deadLetter: false })
    expect(await queueNames()).not.toContain('q-nodead.dead')
  })

  it('is idempotent with the same settings, and refuses different ones instead of ignoring them', async () => {
    const first = await t.postbox.createQueue('q-idem', { maxAttempts: 2 })
    expect(await t.postbox.createQueue('q-idem', { maxAttempts: 2 })).toEqual(first)
    expect(await t.postbox.createQueue('q-idem')).toEqual(first) // no options: nothing to disagree with
    await expect(t.postbox.createQueue('q-idem', { maxAttempts: 9 })).rejects.toThrow(/exists with other settings \(max_attempts\).*updateQueue/)
    expect(await t.postbox.getQueue('q-idem')).toEqual(first)
    const [row] = await t.sql<{ count: number }>(`SELECT count(*)::int AS count FROM "${t.schema}".queues WHERE name = 'q-idem'`)
    expect(row?.count).toBe(1)
  })

  it('many concurrent creates of one queue all succeed and leave one row', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, () => t.postbox.createQueue('q-race')))
    expect(new Set(results.map((r) => r.name))).toEqual(new Set(['q-race']))
    expect((await queueNames()).filter((n) => n.startsWith('q-race'))).toEqual(['q-race', 'q-race.dead'])
  })

  it('a name too long for <name>.dead is accepted with an explicit deadLetter or false', async () => {
    const long = `q${'x'.repeat(61)}` // 62 characters: '<name>.dead' would be 67
    await expect(t.postbox.createQueue(long)).rejects.toThrow(InvalidQueueNameError)
    expect(await t.postbox.createQueue(long, { deadLetter: false })).toMatchObject({ name: long, deadLetter: false })
    const other = `r${'x'.repeat(61)}`
    expect(await t.postbox.createQueue(other, { deadLetter: 'r-long.dead' })).toMatchObject({ deadLetter: 'r-long.dead' })
  })

  it('refuses bad settings with InvalidOptionsError and creates nothing', async () => {
    const before = await queueNames()
    const bad: unknown[] = [
      { visibilityTimeout: 0 },
      { visibilityTimeout: '-1s' },
      { visibilityTimeout: 'soon' },
      { maxAttempts: 0 },
      { maxAttempts: 1.5 },
      { backoff: { type: 'linear' } },
      { backoff: { base: -1 } },
      { maxPayloadBytes: 0 },
      { retention: 0 },
      { colour: 'blue' },
      { deadLetter: true },
    ]
    for (const options of bad) {
      await expect(t.postbox.createQueue('q-bad', options as never), JSON.stringify(options)).rejects.toThrow(InvalidOptionsError)
    }
    await expect(t.postbox.createQueue('q-bad', { deadLetter: 'q-bad' })).rejects.toThrow(InvalidOptionsError)
    await expect(t.postbox.createQueue('q-bad', { deadLetter: 'Not Valid' })).rejects.toThrow(InvalidQueueNameError)
    expect(await queueNames()).toEqual(before)
  })
})

describe('updateQueue', () => {
  it('changes only the given settings', async () => {
    const created = await t.postbox.createQueue('q-upd', { maxAttempts: 4, visibilityTimeout: '10s' })
    const updated = await t.postbox.updateQueue('q-upd', { maxAttempts: 7, backoff: { jitter: false } })
    expect(updated).toMatchObject({
      maxAttempts: 7,
      visibilityTimeout: 10_000,
      backoff: { type: 'exponential', base: 1_000, max: 3_600_000, jitter: false },
      deadLetter: 'q-upd.dead',
    })
    expect(updated.updatedAt.getTime()).toBeGreaterThanOrEqual(created.updatedAt.getTime())
    expect(await t.postbox.getQueue('q-upd')).toEqual(updated)
  })

  it('sets and clears retention and the dead letter', async () => {
    await t.postbox.createQueue('q-upd2')
    expect(await t.postbox.updateQueue('q-upd2', { retention: '1h', deadLetter: 'q-upd2-other' })).toMatchObject({
      retention: 3_600_000,
      deadLetter: 'q-upd2-other',
    })
    expect(await t.postbox.getQueue('q-upd2-other')).not.toBeNull()
    expect(await t.postbox.updateQueue('q-upd2', { retention: false, deadLetter: false })).toMatchObject({
      retention: false,
      deadLetter: false,
    })
  })

  it('refuses an unknown queue and bad options', async () => {
    await expect(t.postbox.updateQueue('q-missing', { maxAttempts: 2 })).rejects.toThrow(QueueNotFoundError)
    await t.postbox.createQueue('q-upd3', { maxAttempts: 2 })
    await expect(t.postbox.updateQueue('q-upd3', { maxAttempts: -1 })).rejects.toThrow(InvalidOptionsError)
    expect(await t.postbox.getQueue('q-upd3')).toMatchObject({ maxAttempts: 2 })
  })
})

describe('getQueue and listQueues', () => {
  it('getQueue returns null for an unknown queue and refuses an invalid name', async () => {
    expect(await t.postbox.getQueue('q-never-created')).toBeNull()
    await expect(t.postbox.getQueue('No Such')).rejects.toThrow(InvalidQueueNameError)
  })

  it('listQueues lists every queue by name, dead letters included', async () => {
    await t.postbox.createQueue('q-list-b')
    await t.postbox.createQueue('q-list-a', { deadLetter: false })
    const names = (await t.postbox.listQueues()).map((q) => q.name)
    expect(names).toEqual([...names].sort())
    expect(names).toEqual(expect.arrayContaining(['q-list-a', 'q-list-b', 'q-list-b.dead']))
    expect(names).not.toContain('q-list-a.dead')
    expect(names).toEqual(await queueNames())
  })
})

describe('deleteQueue', () => {
  it('deletes an empty queue with its default dead letter', async () => {
    await t.postbox.createQueue('q-del')
    await t.postbox.deleteQueue('q-del')
    expect(await t.postbox.getQueue('q-del')).toBeNull()
    expect(await t.postbox.getQueue('q-del.dead')).toBeNull()
  })

  it('refuses a non-empty queue, and deletes it with its messages when asked to purge', async () => {
    await t.postbox.createQueue('q-del2')
    await t.postbox.sendBatch('q-del2', [1, 2, 3])
    await expect(t.postbox.deleteQueue('q-del2')).rejects.toThrow(QueueNotEmptyError)
    expect(await t.postbox.getQueue('q-del2')).not.toBeNull()
    await t.postbox.deleteQueue('q-del2', { purge: true })
    expect(await t.postbox.getQueue('q-del2')).toBeNull()
    const [row] = await t.sql<{ count: number }>(`SELECT count(*)::int AS count FROM "${t.schema}".messages WHERE queue LIKE 'q-del2%'`)
    expect(row?.count).toBe(0)
  })

  it('refuses when only the dead letter holds messages, unless purging', async () => {
    await t.postbox.createQueue('q-del3', { maxAttempts: 1 })
    await t.postbox.send('q-del3', 'x')
    const [m] = await t.postbox.receive('q-del3')
    expect(await t.postbox.nack(m!)).toBe('dead')
    await expect(t.postbox.deleteQueue('q-del3')).rejects.toThrow(QueueNotEmptyError)
    await t.postbox.deleteQueue('q-del3', { purge: true })
    expect(await t.postbox.getQueue('q-del3.dead')).toBeNull()
  })

  it('refuses to delete a queue that another queue uses as its dead letter', async () => {
    await t.postbox.createQueue('q-del4')
    await expect(t.postbox.deleteQueue('q-del4.dead')).rejects.toThrow(InvalidOptionsError)
    expect(await t.postbox.getQueue('q-del4.dead')).not.toBeNull()
  })

  it('keeps a shared dead letter that another queue still uses', async () => {
    await t.postbox.createQueue('q-del5')
    await t.postbox.createQueue('q-del5b', { deadLetter: 'q-del5.dead' })
    await t.postbox.deleteQueue('q-del5')
    expect(await t.postbox.getQueue('q-del5')).toBeNull()
    expect(await t.postbox.getQueue('q-del5.dead')).not.toBeNull()
  })

  it('refuses an unknown queue and unknown options', async () => {
    await expect(t.postbox.deleteQueue('q-nope')).rejects.toThrow(QueueNotFoundError)
    await t.postbox.createQueue('q-del6')
    await expect(t.postbox.deleteQueue('q-del6', { force: true } as never)).rejects.toThrow(InvalidOptionsError)
    expect(await t.postbox.getQueue('q-del6')).not.toBeNull()
  })

  it('a send racing a delete never leaves a message in a deleted queue', async () => {
    for (let round = 0; round < 5; round++) {
      const name = `q-race-del-${round}`
      await t.postbox.createQueue(name, { deadLetter: false })
      const sends = Array.from({ length: 10 }, () => t.postbox.send(name, 'x').then(() => 'sent', (e: Error) => e.name))
      const deleted = t.postbox.deleteQueue(name, { purge: true })
      const outcomes = await Promise.all(sends)
      await deleted
      expect(outcomes.every((o) => o === 'sent' || o === 'QueueNotFoundError'), outcomes.join()).toBe(true)
      const [row] = await t.sql<{ count: number }>(`SELECT count(*)::int AS count FROM "${t.schema}".messages WHERE queue = $1`, [name])
      expect(row?.count).toBe(0)
    }
  })
})

describe('retention', () => {
  it('without retention an acked message is gone', async () => {
    await t.postbox.createQueue('q-noret')
    const { id } = await t.postbox.send('q-noret', { n: 1 })
    await t.postbox.ack(await t.postbox.receive('q-noret'))
    expect(await t.sql(`SELECT 1 FROM "${t.schema}".messages WHERE id = $1`, [id])).toEqual([])
    expect(await t.sql(`SELECT 1 FROM "${t.schema}".messages_archive WHERE id = $1`, [id])).toEqual([])
  })

  it('with retention an acked message stays readable in messages_archive until pruned', async () => {
    await t.postbox.createQueue('q-ret', { retention: '1h' })
    const { id } = await t.postbox.send('q-ret', { n: 1 }, { headers: { h: 'v' } })
    const [m] = await t.postbox.receive('q-ret')
    await t.postbox.ack(m!)
    expect(await t.sql(`SELECT 1 FROM "${t.schema}".messages WHERE id = $1`, [id])).toEqual([])
    const [archived] = await t.sql(`SELECT queue, attempt, payload, headers FROM "${t.schema}".messages_archive WHERE id = $1`, [id])
    expect(archived).toEqual({ queue: 'q-ret', attempt: 1, payload: { n: 1 }, headers: { h: 'v' } })
    expect((await t.postbox.stats('q-ret'))[0]).toMatchObject({ retained: 1 })

    // Younger than the retention period: kept. Older (moved back in time): pruned.
    expect(await t.postbox.pruneArchive()).toBe(0)
    await t.sql(`UPDATE "${t.schema}".messages_archive SET acked_at = now() - interval '61 minutes' WHERE id = $1`, [id])
    expect(await t.postbox.pruneArchive()).toBe(1)
    expect(await t.sql(`SELECT 1 FROM "${t.schema}".messages_archive WHERE id = $1`, [id])).toEqual([])
  })

  it("an ack reads the archiving queues through the partial index, not every queue (migration 0015)", async () => {
    await t.sql(`SELECT "${t.schema}".create_queue('many-' || g) FROM generate_series(1, 300) g`)
    await t.postbox.createQueue('q-ret-indexed', { retention: '1h' })
    await t.sql(`ANALYZE "${t.schema}".queues`)
    // The statement ack() starts with (migrations/0007, 0011), planned as the function's plan would be.
    const plan = await t.sql<{ 'QUERY PLAN': string }>(`EXPLAIN SELECT array_agg(q.name) FROM "${t.schema}".queues q WHERE q.retention IS NOT NULL`)
    const text = plan.map((r) => r['QUERY PLAN']).join('\n')
    expect(text).toContain('queues_archiving')
    expect(text).not.toContain('Seq Scan')
    // And the ack still archives through it.
    const { id } = await t.postbox.send('q-ret-indexed', 1)
    await t.postbox.ack(await t.postbox.receive('q-ret-indexed'))
    expect(await t.sql(`SELECT queue FROM "${t.schema}".messages_archive WHERE id = $1`, [id])).toEqual([{ queue: 'q-ret-indexed' }])
  })
})
