import type pg from 'pg'
import { describe, expect, it } from 'vitest'
import { QueueNotFoundError, type Message } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'

// deleteQueue({ purge: true }) while a worker runs handlers of that queue. What must happen:
// the delete does not wait for the handlers; their acks find nothing and each delivery ends as
// leaseLost (never completed, retried or dead-lettered); in transactional mode the handler's
// writes are rolled back with the failed ack; the worker survives, reporting each failed claim
// as an error; and when a queue of the same name is created again, the same worker handles its
// new messages, whose groups start free, while nothing of the old queue comes back.

const t = useTestSchema()

/** A gate the handlers wait at until the test opens it. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open = () => {}
  const wait = new Promise<void>((resolve) => (open = resolve))
  return { wait, open }
}

async function runDeleteWhileRunning(queue: string, transactional: boolean) {
  await t.sql(`CREATE TABLE IF NOT EXISTS "${t.schema}".effects (id bigint, queue text)`)
  await t.postbox.createQueue(queue)
  const old = await t.postbox.sendBatch(queue, [
    { payload: 'a', groupKey: 'g' }, { payload: 'b', groupKey: 'g' }, { payload: 'c' }, { payload: 'd' },
  ])
  const release = gate()
  const started: string[] = []
  const events = { completed: [] as string[], leaseLost: [] as string[], retried: [] as string[], deadLettered: [] as string[] }
  const errors: unknown[] = []
  const worker = t.postbox.work<string, pg.PoolClient>(queue, async (m: Message<string>, ctx) => {
    started.push(m.id)
    if (old.includes(m.id)) await release.wait
    if (transactional) await ctx.tx!.query(`INSERT INTO "${t.schema}".effects VALUES ($1, $2)`, [m.id, queue])
  }, { concurrency: 4, transactional })
  for (const name of ['completed', 'leaseLost', 'retried', 'deadLettered'] as const) worker.on(name, (m: Message) => events[name].push(m.id))
  worker.on('error', (error) => errors.push(error))
  let fresh: string[] = []
  try {
    // Three of the old messages run (b waits for a: one per group in flight).
    await waitFor('handlers running', () => started.length === 3)
    await t.postbox.deleteQueue(queue, { purge: true }) // does not wait for the handlers
    expect(await t.postbox.getQueue(queue)).toBeNull()
    release.open()
    await waitFor('every running delivery ended', () => events.leaseLost.length === 3)
    // The worker goes on claiming, and says why nothing comes.
    await waitFor('a claim refused', () => errors.some((e) => e instanceof QueueNotFoundError))
    expect(worker.inFlight).toBe(0)

    // The same name again: the same worker handles new messages; the group starts free.
    await t.postbox.createQueue(queue)
    fresh = await t.postbox.sendBatch(queue, [{ payload: 'new-g', groupKey: 'g' }, { payload: 'new' }])
    await waitFor('new messages handled', () => fresh.every((id) => events.completed.includes(id)), { timeoutMs: 15_000 })
  } finally {
    release.open()
    await worker.stop()
  }
  const [left] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".group_leases WHERE queue = $1`, [queue])
  const effects = await t.sql<{ id: string }>(`SELECT id::text FROM "${t.schema}".effects WHERE queue = $1 ORDER BY id`, [queue])
  return { old, fresh, started, events, errors, groupRows: left!.n, effects: effects.map((e) => e.id) }
}

describe('deleteQueue while a worker runs handlers of the queue', { timeout: 60_000 }, () => {
  it('lease mode: running deliveries end as leaseLost, the worker survives, a re-created queue is served', async () => {
    const r = await runDeleteWhileRunning('doomed', false)
    expect(r.events.leaseLost.sort()).toEqual(r.started.filter((id) => r.old.includes(id)).sort())
    expect(r.events.completed.sort()).toEqual([...r.fresh].sort())
    expect(r.events.retried).toEqual([])
    expect(r.events.deadLettered).toEqual([])
    // b (waiting for its group) was deleted with the queue and never ran; nothing old came back.
    expect(r.started.filter((id) => r.old.includes(id))).toHaveLength(3)
    expect(r.started.filter((id) => !r.old.includes(id)).sort()).toEqual([...r.fresh].sort())
    expect(r.errors.every((e) => e instanceof QueueNotFoundError)).toBe(true)
    expect(r.groupRows).toBe(0)
    const [stats] = await t.postbox.stats('doomed')
    expect(stats).toMatchObject({ total: 0, dead: 0 })
  })

  it('transactional mode: the handlers\' writes are rolled back with their refused acks', async () => {
    const r = await runDeleteWhileRunning('doomed-tx', true)
    expect(r.events.leaseLost).toHaveLength(3)
    expect(r.events.completed.sort()).toEqual([...r.fresh].sort())
    // Only the re-created queue's deliveries committed their effects.
    expect(r.effects).toEqual([...r.fresh].sort((a, b) => Number(BigInt(a) - BigInt(b))))
  })
})
