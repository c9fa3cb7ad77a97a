import { describe, expect, it } from 'vitest'
import { NonRetryableError } from '../src/index.js'
import { waitFor } from './support/wait-for.js'
import { useTestSchema } from './support/test-schema.js'

// Strict order per groupKey: one message of a group in flight at a time, in the order sent.

const t = useTestSchema()
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('groups', () => {
  it('a worker handles each group one at a time and in order, and other messages alongside', async () => {
    await t.postbox.createQueue('g-order')
    const groups = ['a', 'b', 'c', 'd']
    const sent: { group: string | null; n: number }[] = []
    for (let n = 0; n < 15; n++) {
      for (const group of groups) sent.push({ group, n })
      if (n < 10) sent.push({ group: null, n })
    }
    // Interleaved, in several statements: one batch, then single sends.
    await t.postbox.sendBatch('g-order', sent.slice(0, 20).map((p) => ({ payload: p, ...(p.group ? { groupKey: p.group } : {}) })))
    for (const p of sent.slice(20)) await t.postbox.send('g-order', p, p.group ? { groupKey: p.group } : {})

    const handled = new Map<string, number[]>()
    const inFlight = new Map<string, number>()
    let maxPerGroup = 0
    let ungrouped = 0
    let maxUngrouped = 0
    let running = 0
    const worker = t.postbox.work<{ group: string | null; n: number }>('g-order', async (m) => {
      const { group, n } = m.payload
      if (group === null) {
        running++
        maxUngrouped = Math.max(maxUngrouped, running)
        await sleep(20)
        running--
        ungrouped++
        return
      }
      expect(m.groupKey).toBe(group)
      inFlight.set(group, (inFlight.get(group) ?? 0) + 1)
      maxPerGroup = Math.max(maxPerGroup, inFlight.get(group) as number)
      await sleep(Math.random() * 4)
      handled.set(group, [...(handled.get(group) ?? []), n])
      inFlight.set(group, (inFlight.get(group) as number) - 1)
    }, { concurrency: 8 })
    try {
      await waitFor('all handled', () => ungrouped === 10 && groups.every((g) => handled.get(g)?.length === 15), { timeoutMs: 20_000 })
    } finally {
      await worker.stop()
    }
    for (const g of groups) expect(handled.get(g)).toEqual(Array.from({ length: 15 }, (_, n) => n))
    expect(maxPerGroup).toBe(1)
    expect(maxUngrouped).toBeGreaterThan(1) // ungrouped messages still run in parallel
  })

  it('a claim takes at most one message per group', async () => {
    await t.postbox.createQueue('g-claim')
    await t.postbox.sendBatch('g-claim', [1, 2, 3, 4, 5].map((n) => ({ payload: n, groupKey: 'only' })))
    await t.postbox.sendBatch('g-claim', [6, 7])
    const first = await t.postbox.receive('g-claim', { max: 10 })
    expect(first.map((m) => m.payload).sort()).toEqual([1, 6, 7])
    expect(await t.postbox.receive('g-claim', { max: 10 })).toEqual([]) // 2 waits for 1
    await t.postbox.ack(first)
    expect((await t.postbox.receive('g-claim', { max: 10 })).map((m) => m.payload)).toEqual([2])
  })

  it('a failing message holds its group back until its retry succeeds; other groups go on', async () => {
    await t.postbox.createQueue('g-retry', { backoff: { type: 'fixed', base: '200ms' } })
    await t.postbox.send('g-retry', 'a1', { groupKey: 'a' })
    await t.postbox.send('g-retry', 'a2', { groupKey: 'a' })
    await t.postbox.send('g-retry', 'b1', { groupKey: 'b' })
    await t.postbox.send('g-retry', 'b2', { groupKey: 'b' })
    const order: string[] = []
    let failures = 0
    const worker = t.postbox.work<string>('g-retry', (m) => {
      if (m.payload === 'a1' && failures < 2) {
        failures++
        throw new Error('not yet')
      }
      order.push(m.payload)
    }, { concurrency: 4 })
    try {
      await waitFor('all handled', () => order.length === 4, { timeoutMs: 10_000 })
    } finally {
      await worker.stop()
    }
    expect(order.indexOf('a1')).toBeLessThan(order.indexOf('a2'))
    expect(order.indexOf('b1')).toBeLessThan(order.indexOf('b2'))
    expect(order.indexOf('b2')).toBeLessThan(order.indexOf('a1')) // b was not held back by a
    expect(failures).toBe(2)
  })

  it('a dead-lettered message lets the rest of its group through', async () => {
    await t.postbox.createQueue('g-dead')
    await t.postbox.send('g-dead', 'poison', { groupKey: 'g' })
    await t.postbox.send('g-dead', 'next', { groupKey: 'g' })
    const handled: string[] = []
    const worker = t.postbox.work<string>('g-dead', (m) => {
      if (m.payload === 'poison') throw new NonRetryableError('bad')
      handled.push(m.payload)
    })
    try {
      await waitFor('next handled', () => handled.includes('next'), { timeoutMs: 10_000 })
    } finally {
      await worker.stop()
    }
    const [stats] = await t.postbox.stats('g-dead')
    expect(stats).toMatchObject({ total: 0, dead: 1 })
  })
})
