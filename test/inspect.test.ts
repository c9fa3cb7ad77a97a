import { describe, expect, it } from 'vitest'
import { InvalidOptionsError, QueueNotFoundError } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'

const t = useTestSchema()

describe('postbox.peek()', () => {
  it('pages through every message exactly once in delivery order, across priorities and equal times', async () => {
    await t.postbox.createQueue('i-pages')
    // Same transaction: equal enqueue and availability times, so order falls to priority, then id.
    const items = Array.from({ length: 37 }, (_, i) => ({ payload: i, priority: i % 4 }))
    const ids = await t.postbox.sendBatch('i-pages', items)
    const expected = ids.map((id, i) => ({ id, priority: i % 4 })).sort((a, b) => b.priority - a.priority || Number(a.id) - Number(b.id)).map((m) => m.id)
    const seen: string[] = []
    let after: string | undefined
    do {
      const page = await t.postbox.peek('i-pages', { limit: 5, after })
      expect(page.messages.length).toBeLessThanOrEqual(5)
      seen.push(...page.messages.map((m) => m.id))
      after = page.next ?? undefined
    } while (after)
    expect(seen).toEqual(expected)
  })

  it('with dead: true shows only the dead letters that came from this queue, when two share a dead letter', async () => {
    await t.postbox.createQueue('i-shared-dead')
    await t.postbox.createQueue('i-a', { deadLetter: 'i-shared-dead', maxAttempts: 1 })
    await t.postbox.createQueue('i-b', { deadLetter: 'i-shared-dead', maxAttempts: 1 })
    await t.postbox.send('i-a', 'from a')
    await t.postbox.send('i-b', 'from b')
    for (const q of ['i-a', 'i-b']) {
      const [m] = await t.postbox.receive(q)
      await t.postbox.nack(m!, { error: `failed in ${q}` })
    }
    const page = await t.postbox.peek('i-a', { dead: true })
    expect(page.messages).toEqual([expect.objectContaining({ queue: 'i-shared-dead', payload: 'from a', originalQueue: 'i-a', lastError: 'failed in i-a', originalAttempt: 1 })])
    expect((await t.postbox.peek('i-shared-dead')).messages.map((m) => m.payload)).toEqual(['from a', 'from b'])
  })

  it('shows text and binary payloads as they were sent', async () => {
    await t.postbox.createQueue('i-encodings')
    await t.postbox.sendBatch('i-encodings', ['héllo', Buffer.from([0, 1, 254, 255])])
    const { messages } = await t.postbox.peek('i-encodings')
    expect(messages.map((m) => [m.encoding, m.payload])).toEqual([['text', 'héllo'], ['binary', Buffer.from([0, 1, 254, 255]).toString('base64')]])
  })

  it('refuses an unknown queue, a forged cursor, a bad limit, and dead letters of a queue without one', async () => {
    await t.postbox.createQueue('i-nodead', { deadLetter: false })
    await expect(t.postbox.peek('i-nowhere')).rejects.toThrow(QueueNotFoundError)
    await expect(t.postbox.peek('i-nodead', { after: Buffer.from('["x"]').toString('base64url') })).rejects.toThrow(/invalid cursor/)
    await expect(t.postbox.peek('i-nodead', { limit: 0 })).rejects.toThrow(InvalidOptionsError)
    await expect(t.postbox.peek('i-nodead', { dead: true })).rejects.toThrow(/has no dead letter/)
  })
})

describe('postbox.purgeQueue()', () => {
  it('deletes every message of the queue and nothing else', async () => {
    await t.postbox.createQueue('i-purge')
    await t.postbox.createQueue('i-keep')
    await t.postbox.sendBatch('i-purge', [1, 2, { payload: 3, delay: '1h' }])
    await t.postbox.send('i-keep', 1)
    const [inFlight] = await t.postbox.receive('i-purge')
    expect(await t.postbox.purgeQueue('i-purge')).toBe(3)
    expect((await t.postbox.stats('i-purge'))[0]).toMatchObject({ total: 0 })
    expect((await t.postbox.stats('i-keep'))[0]).toMatchObject({ ready: 1 })
    // The consumer that held one learns it at its ack.
    await expect(t.postbox.ack(inFlight!)).rejects.toThrow(/lease lost/)
    await expect(t.postbox.purgeQueue('i-nowhere')).rejects.toThrow(QueueNotFoundError)
  })
})

describe('postbox.activity()', () => {
  it('reads the database clock and the last message id drawn', async () => {
    await t.postbox.createQueue('i-activity')
    const before = await t.postbox.activity()
    const ids = await t.postbox.sendBatch('i-activity', [1, 2, 3])
    const after = await t.postbox.activity()
    expect(after.lastMessageId).toBe(ids[2])
    expect(BigInt(after.lastMessageId!) - BigInt(before.lastMessageId ?? '0')).toBeGreaterThanOrEqual(3n)
    expect(after.at.getTime()).toBeGreaterThanOrEqual(before.at.getTime())
  })
})
