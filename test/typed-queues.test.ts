import { beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { defineQueue, InvalidPayloadError, InvalidQueueNameError, type Message } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'

const t = useTestSchema()

const emails = defineQueue({ name: 'emails', schema: z.object({ to: z.string().email(), retries: z.number().int().default(0) }) })

beforeAll(async () => {
  await t.postbox.createQueue('emails')
})

async function count(queue: string): Promise<number> {
  const [row] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".messages WHERE queue = $1`, [queue])
  return row?.n ?? -1
}

describe('typed queues', () => {
  it('sends and receives a valid payload, typed, with the schema output stored', async () => {
    const { id } = await t.postbox.send(emails, { to: 'a@example.com', retries: 0 })
    const [m] = await t.postbox.receive(emails)
    const typed: Message<{ to: string; retries: number }> = m!
    expect(typed).toMatchObject({ id, queue: 'emails', payload: { to: 'a@example.com', retries: 0 } })
    await t.postbox.ack(typed)

    // Defaults apply before storage: what is stored is what the schema outputs.
    const sent = await t.postbox.sendBatch(emails, [{ to: 'x@example.org' } as { to: string; retries: number }])
    const [row] = await t.sql(`SELECT payload FROM "${t.schema}".messages WHERE id = $1`, [sent[0]])
    expect(row?.payload).toEqual({ to: 'x@example.org', retries: 0 })
    await t.postbox.ack(await t.postbox.receive(emails))
  })

  it('send of an invalid payload throws InvalidPayloadError with the zod issues and writes nothing', async () => {
    const before = await count('emails')
    const error = await t.postbox.send(emails, { to: 'not an email' } as never).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(InvalidPayloadError)
    const issues = (error as InvalidPayloadError).issues as { path: unknown[] }[]
    expect(issues).toHaveLength(1)
    expect(issues[0]?.path).toEqual(['to'])
    expect((error as Error).message).toMatch(/schema of queue 'emails'.*to:/)

    const missing = await t.postbox.send(emails, {} as never).catch((e: unknown) => e)
    expect(missing).toBeInstanceOf(InvalidPayloadError)
    expect(((missing as InvalidPayloadError).issues as { path: unknown[] }[]).map((i) => i.path)).toEqual([['to']])

    // One bad item refuses the whole batch.
    await expect(t.postbox.sendBatch(emails, [{ to: 'ok@example.com', retries: 0 }, { to: 42 } as never])).rejects.toThrow(InvalidPayloadError)
    expect(await count('emails')).toBe(before)
  })

  it('inside a transaction, a refused send leaves the transaction usable', async () => {
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      await expect(t.postbox.send(emails, { to: 'bad' } as never, { tx: client })).rejects.toThrow(InvalidPayloadError)
      await t.postbox.send(emails, { to: 'good@example.com', retries: 1 }, { tx: client })
      await client.query('COMMIT')
    } finally {
      client.release()
    }
    const [m] = await t.postbox.receive(emails)
    expect(m?.payload).toEqual({ to: 'good@example.com', retries: 1 })
    await t.postbox.ack(m!)
  })

  it('a stored payload that no longer parses is dead-lettered on receive with the reason', async () => {
    // Written by an older version of the app, or by SQL: the typed queue never hands it out.
    const bad = await t.postbox.send('emails', { to: 'legacy-format' })
    const good = await t.postbox.send('emails', { to: 'ok@example.com', retries: 2 })
    const got = await t.postbox.receive(emails, { max: 10 })
    expect(got.map((m) => m.id)).toEqual([good.id])
    const [dead] = await t.sql(
      `SELECT queue, original_queue, original_attempt, last_error, payload FROM "${t.schema}".messages WHERE id = $1`,
      [bad.id],
    )
    expect(dead).toMatchObject({ queue: 'emails.dead', original_queue: 'emails', original_attempt: 1, payload: { to: 'legacy-format' } })
    expect(dead?.last_error).toMatch(/does not match the schema of queue 'emails'.*to:/)
    await t.postbox.ack(got)
    expect(await count('emails')).toBe(0)
  })

  it('a text or binary payload on a JSON-typed queue is dead-lettered too', async () => {
    const text = await t.postbox.send('emails', 'just text')
    expect(await t.postbox.receive(emails)).toEqual([])
    const [dead] = await t.sql(`SELECT queue FROM "${t.schema}".messages WHERE id = $1`, [text.id])
    expect(dead).toEqual({ queue: 'emails.dead' })
  })

  it('a typed queue of binary payloads round-trips bytes', async () => {
    await t.postbox.createQueue('blobs')
    const blobs = defineQueue({ name: 'blobs', schema: z.instanceof(Uint8Array) })
    await t.postbox.send(blobs, new Uint8Array([1, 2, 3]))
    await expect(t.postbox.send(blobs, 'text' as never)).rejects.toThrow(InvalidPayloadError)
    const [m] = await t.postbox.receive(blobs)
    expect([...m!.payload]).toEqual([1, 2, 3])
    await t.postbox.ack(m!)
  })

  it('defineQueue refuses an invalid name at once', () => {
    expect(() => defineQueue({ name: 'Bad Name', schema: z.string() })).toThrow(InvalidQueueNameError)
  })
})
