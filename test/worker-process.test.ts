import { describe, expect, it } from 'vitest'
import { startChildWorker } from './support/child-worker.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'

// Workers in other processes, killed or frozen for real.
const t = useTestSchema()

describe('a worker process', () => {
  it('killed with SIGKILL mid-handler loses nothing: its messages come back after the lease with attempt 2', async () => {
    await t.postbox.createQueue('killed', { visibilityTimeout: '1s' })
    const ids = await t.postbox.sendBatch('killed', [1, 2, 3])
    const child = await startChildWorker({ DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: 'killed', HANDLER: 'hang', CONCURRENCY: '5' })
    await child.next(() => child.events.filter((e) => e.event === 'started').length === 3)
    child.kill('SIGKILL')
    await child.exited
    const again = await waitFor('redelivered', async () => {
      const got = await t.postbox.receive('killed', { max: 10 })
      return got.length > 0 ? got : undefined
    }, { timeoutMs: 5_000, intervalMs: 100 })
    const rest = again.length < 3 ? await t.postbox.receive('killed', { max: 10, wait: '3s' }) : []
    const all = [...again, ...rest]
    expect(all.map((m) => m.id).sort()).toEqual([...ids].sort())
    expect(all.every((m) => m.attempt === 2)).toBe(true)
    await t.postbox.ack(all)
  })

  it('frozen past its lease (SIGSTOP) cannot ack the newer delivery when it resumes', async () => {
    await t.postbox.createQueue('frozen', { visibilityTimeout: '1s' })
    const { id } = await t.postbox.send('frozen', { job: 1 })
    const child = await startChildWorker({
      DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: 'frozen', HANDLER: 'ok', HANDLER_MS: '300', VISIBILITY_TIMEOUT: '1s',
    })
    try {
      await child.next((e) => e.event === 'started' && e.id === id)
      child.kill('SIGSTOP')
      // The lease runs out while the process is frozen; another consumer takes the message.
      const [newer] = await waitFor('claimed again', async () => {
        const got = await t.postbox.receive('frozen', { visibilityTimeout: '30s' })
        return got.length > 0 ? got : undefined
      }, { timeoutMs: 5_000, intervalMs: 100 })
      expect(newer?.attempt).toBe(2)
      child.kill('SIGCONT')
      await child.next((e) => e.event === 'leaseLost' && e.id === id)
      expect(child.events.some((e) => e.event === 'completed')).toBe(false)
      // The newer delivery still holds the message and can ack it.
      const [row] = await t.sql<{ lease: string }>(`SELECT lease::text FROM "${t.schema}".messages WHERE id = $1`, [id])
      expect(row?.lease).toBe(newer?.lease)
      await t.postbox.ack(newer!)
    } finally {
      child.kill('SIGKILL')
      await child.exited
    }
  })

  it('stops gracefully on SIGTERM', async () => {
    await t.postbox.createQueue('graceful')
    await t.postbox.sendBatch('graceful', [1, 2])
    const child = await startChildWorker({ DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: 'graceful', HANDLER: 'ok', HANDLER_MS: '200' })
    await child.next(() => child.events.filter((e) => e.event === 'started').length === 2)
    child.kill('SIGTERM')
    await child.next((e) => e.event === 'stopped', 30_000)
    expect(await child.exited).toBe(0)
    expect(child.events.filter((e) => e.event === 'completed')).toHaveLength(2)
    const [s] = await t.postbox.stats('graceful')
    expect(s).toMatchObject({ total: 0 })
  })
})
