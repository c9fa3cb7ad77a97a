import { describe, expect, it } from 'vitest'
import { InvalidOptionsError, LeaseLostError, QueueNotFoundError, type Message } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'

const t = useTestSchema()

interface Row {
  id: string
  queue: string
  attempt: number
  lease: string | null
  last_error: string | null
  original_queue: string | null
  original_attempt: number | null
  dead_at: Date | null
  available_in_ms: number
}

async function row(id: string): Promise<Row | undefined> {
  const [r] = await t.sql<Row>(
    `SELECT id, queue, attempt, lease, last_error, original_queue, original_attempt, dead_at,
            (extract(epoch FROM available_at - now()) * 1000)::float8 AS available_in_ms
     FROM "${t.schema}".messages WHERE id = $1`,
    [id],
  )
  return r
}

/** The whole messages table of the queue, to show a refused call changed nothing. */
async function snapshot(queue: string): Promise<unknown[]> {
  return t.sql(`SELECT * FROM "${t.schema}".messages WHERE queue LIKE $1 || '%' ORDER BY id`, [queue])
}

/** Receives until a message comes (its lease expired, or its delay passed). */
async function receiveWhenReady(queue: string, options: { visibilityTimeout?: number | string } = {}): Promise<Message> {
  return waitFor(`a delivery from ${queue}`, async () => (await t.postbox.receive(queue, options))[0])
}

describe('receive', () => {
  it('never returns more than max, and returns what is ready', async () => {
    await t.postbox.createQueue('r-max')
    await t.postbox.sendBatch('r-max', Array.from({ length: 10 }, (_, i) => i))
    expect(await t.postbox.receive('r-max')).toHaveLength(1)
    expect(await t.postbox.receive('r-max', { max: 3 })).toHaveLength(3)
    expect(await t.postbox.receive('r-max', { max: 100 })).toHaveLength(6)
    expect(await t.postbox.receive('r-max', { max: 100 })).toEqual([])
  })

  it('leases each delivery: attempt 1, a lease token and an expiry from the database clock', async () => {
    await t.postbox.createQueue('r-lease', { visibilityTimeout: '45s' })
    const { id } = await t.postbox.send('r-lease', { a: 1 }, { groupKey: 'g1', priority: 3 })
    const [m] = await t.postbox.receive('r-lease')
    expect(m).toMatchObject({ id, queue: 'r-lease', attempt: 1, priority: 3, groupKey: 'g1', dedupeKey: null, lastError: null })
    expect(m!.lease).toMatch(/^[0-9a-f-]{36}$/)
    expect(m!.enqueuedAt).toBeInstanceOf(Date)
    // The times are the database's, to the millisecond (they travel as epoch milliseconds).
    const [times] = await t.sql<{ enqueued: string; claimed: string; expires: string }>(
      `SELECT to_char(enqueued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS enqueued,
              to_char(claimed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS claimed,
              to_char(available_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS expires
       FROM "${t.schema}".messages WHERE id = $1`,
      [id],
    )
    expect([m!.enqueuedAt.toISOString(), m!.claimedAt.toISOString(), m!.leaseExpiresAt.toISOString()])
      .toEqual([times!.enqueued, times!.claimed, times!.expires])
    const r = await row(id)
    expect(r).toMatchObject({ attempt: 1, lease: m!.lease })
    expect(r!.available_in_ms).toBeGreaterThan(44_000)
    expect(r!.available_in_ms).toBeLessThanOrEqual(45_000)
    // A per-call visibility timeout overrides the queue's.
    await t.postbox.send('r-lease', 2)
    const [m2] = await t.postbox.receive('r-lease', { visibilityTimeout: '5s' })
    expect((await row(m2!.id))!.available_in_ms).toBeLessThanOrEqual(5_000)
  })

  it('refuses unknown queues and bad options', async () => {
    await expect(t.postbox.receive('r-nope')).rejects.toThrow(QueueNotFoundError)
    await t.postbox.createQueue('r-opts')
    for (const options of [{ max: 0 }, { max: 1001 }, { max: 1.5 }, { visibilityTimeout: 0 }, { visibilityTimeout: -5 }, { batch: 3 }]) {
      await expect(t.postbox.receive('r-opts', options as never), JSON.stringify(options)).rejects.toThrow(InvalidOptionsError)
    }
  })
})

describe('visibility timeout', () => {
  it('an unacked message comes back after its lease with attempt 2, and the stale ack is refused', async () => {
    await t.postbox.createQueue('r-vt')
    const { id } = await t.postbox.send('r-vt', 'work')
    const [first] = await t.postbox.receive('r-vt', { visibilityTimeout: 2_000 })
    expect(first).toMatchObject({ id, attempt: 1 })
    // Invisible while leased (2 s: long enough that a loaded machine still looks within it).
    expect(await t.postbox.receive('r-vt')).toEqual([])
    const second = await receiveWhenReady('r-vt', { visibilityTimeout: '1m' })
    expect(second).toMatchObject({ id, attempt: 2 })
    expect(second.lease).not.toBe(first!.lease)

    // The first consumer wakes up late: its ack, nack and extend are refused and change nothing.
    const before = await snapshot('r-vt')
    await expect(t.postbox.ack(first!)).rejects.toThrow(LeaseLostError)
    await expect(t.postbox.nack(first!, { error: 'late' })).rejects.toThrow(LeaseLostError)
    await expect(t.postbox.extend(first!, '1h')).rejects.toThrow(LeaseLostError)
    expect(await snapshot('r-vt')).toEqual(before)

    await t.postbox.ack(second)
    expect(await row(id)).toBeUndefined()
    // Acking twice: the lease is gone with the message.
    const error = await t.postbox.ack(second).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LeaseLostError)
    expect((error as LeaseLostError).ids).toEqual([id])
  })
})

describe('ack', () => {
  it('acks many in one call', async () => {
    await t.postbox.createQueue('r-ack')
    await t.postbox.sendBatch('r-ack', Array.from({ length: 50 }, (_, i) => i))
    const got = await t.postbox.receive('r-ack', { max: 50 })
    expect(got).toHaveLength(50)
    await t.postbox.ack(got)
    expect(await snapshot('r-ack')).toEqual([])
    await t.postbox.ack([])
  })

  it('an id that is not a plain number acks nothing, even one that reads as two array elements', async () => {
    await t.postbox.createQueue('r-ack-odd')
    await t.postbox.sendBatch('r-ack-odd', [1, 2])
    const [a, b] = await t.postbox.receive('r-ack-odd', { max: 2 })
    const before = await snapshot('r-ack-odd')
    // Ids and leases travel as array literals when every element is plain; '1,2' must not become two.
    const odd = { id: `${a!.id},${b!.id}`, lease: a!.lease }
    await expect(t.postbox.ack(odd)).rejects.toThrow()
    await expect(t.postbox.ack([odd, { id: b!.id, lease: `${b!.lease},${a!.lease}` }])).rejects.toThrow()
    expect(await snapshot('r-ack-odd')).toEqual(before)
    await t.postbox.ack([a!, b!])
    expect(await snapshot('r-ack-odd')).toEqual([])
  })

  it('a batch with one lost lease acks the rest and names the lost one', async () => {
    await t.postbox.createQueue('r-ack2')
    await t.postbox.sendBatch('r-ack2', [1, 2, 3])
    const got = await t.postbox.receive('r-ack2', { max: 3 })
    const stale = { id: got[1]!.id, lease: '00000000-0000-4000-8000-000000000000' }
    const error = await t.postbox.ack([got[0]!, stale, got[2]!]).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LeaseLostError)
    expect((error as LeaseLostError).ids).toEqual([got[1]!.id])
    expect((await snapshot('r-ack2')).map((r) => (r as Row).id)).toEqual([got[1]!.id])
  })

  it('an ack inside a transaction that rolls back leaves the message in flight', async () => {
    await t.postbox.createQueue('r-ack3')
    const { id } = await t.postbox.send('r-ack3', 1)
    const [m] = await t.postbox.receive('r-ack3')
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      await t.postbox.ack(m!, { tx: client })
      await client.query('ROLLBACK')
      expect(await row(id)).toMatchObject({ lease: m!.lease })
      await client.query('BEGIN')
      await t.postbox.ack(m!, { tx: client })
      await client.query('COMMIT')
      expect(await row(id)).toBeUndefined()
    } finally {
      client.release()
    }
  })

  it('refuses something that is not a delivery', async () => {
    await expect(t.postbox.ack({ id: '1' } as never)).rejects.toThrow(InvalidOptionsError)
    await expect(t.postbox.ack([{ id: 1, lease: 'x' }] as never)).rejects.toThrow(InvalidOptionsError)
  })
})

describe('nack', () => {
  it('retries after an explicit delay and records the error', async () => {
    await t.postbox.createQueue('r-nack')
    const { id } = await t.postbox.send('r-nack', 'x')
    const [m] = await t.postbox.receive('r-nack')
    expect(await t.postbox.nack(m!, { delay: '10m', error: new Error('smtp down') })).toBe('retried')
    const r = await row(id)
    expect(r).toMatchObject({ queue: 'r-nack', attempt: 1, lease: null })
    expect(r!.last_error).toMatch(/^Error: smtp down/)
    expect(r!.available_in_ms).toBeGreaterThan(599_000)
    expect(r!.available_in_ms).toBeLessThanOrEqual(600_000)
    expect(await t.postbox.receive('r-nack')).toEqual([])
    // Once due, the next delivery carries the previous error and attempt 2.
    await t.sql(`UPDATE "${t.schema}".messages SET available_at = now() WHERE id = $1`, [id])
    const [again] = await t.postbox.receive('r-nack')
    expect(again).toMatchObject({ id, attempt: 2 })
    expect(again!.lastError).toMatch(/smtp down/)
    // The old lease no longer works after a nack either.
    await expect(t.postbox.nack(m!)).rejects.toThrow(LeaseLostError)
  })

  it('with no delay, uses the queue backoff: fixed, and exponential capped at max', async () => {
    await t.postbox.createQueue('r-fixed', { maxAttempts: 10, backoff: { type: 'fixed', base: '7s', jitter: false } })
    await t.postbox.createQueue('r-exp', { maxAttempts: 10, backoff: { type: 'exponential', base: '1s', max: '5s', jitter: false } })
    const delays = async (queue: string): Promise<number[]> => {
      const { id } = await t.postbox.send(queue, 'x')
      const seen: number[] = []
      for (let i = 0; i < 5; i++) {
        await t.sql(`UPDATE "${t.schema}".messages SET available_at = now() WHERE id = $1`, [id])
        const [m] = await t.postbox.receive(queue)
        expect(m?.attempt).toBe(i + 1)
        await t.postbox.nack(m!, { error: `fail ${i + 1}` })
        seen.push(Math.round((await row(id))!.available_in_ms / 1000))
      }
      return seen
    }
    expect(await delays('r-fixed')).toEqual([7, 7, 7, 7, 7])
    expect(await delays('r-exp')).toEqual([1, 2, 4, 5, 5])
  })

  it('jitter keeps the delay between half and all of the backoff', async () => {
    await t.postbox.createQueue('r-jitter', { maxAttempts: 100, backoff: { type: 'fixed', base: '10s', jitter: true } })
    await t.postbox.sendBatch('r-jitter', Array.from({ length: 20 }, (_, i) => i))
    const got = await t.postbox.receive('r-jitter', { max: 20 })
    // Each nack sets available_at = (its transaction's now()) + delay, with that now() between the
    // database clock read before and after it: so the delay lies within exact bounds, however slow
    // the machine is.
    const [{ before }] = await t.sql<{ before: string }>('SELECT clock_timestamp()::text AS before') as [{ before: string }]
    for (const m of got) await t.postbox.nack(m)
    const [{ after }] = await t.sql<{ after: string }>('SELECT clock_timestamp()::text AS after') as [{ after: string }]
    const rows = await t.sql<{ most: number; least: number }>(
      `SELECT (extract(epoch FROM available_at - $1::timestamptz) * 1000)::float8 AS most,
              (extract(epoch FROM available_at - $2::timestamptz) * 1000)::float8 AS least
       FROM "${t.schema}".messages WHERE queue = 'r-jitter'`, [before, after])
    expect(rows).toHaveLength(20)
    for (const r of rows) {
      expect(r.most).toBeGreaterThanOrEqual(5_000) // the delay is at least half the backoff...
      expect(r.least).toBeLessThanOrEqual(10_000) // ...and at most all of it
    }
    expect(new Set(rows.map((r) => r.most)).size).toBeGreaterThan(1)
  })

  it('a huge backoff base does not overflow', async () => {
    await t.postbox.createQueue('r-huge', { maxAttempts: 100, backoff: { type: 'exponential', base: '3650d', max: '3650d', jitter: false } })
    const { id } = await t.postbox.send('r-huge', 'x')
    // At attempt 60 the exponential term is 2^40 times ten years: far past interval's range.
    await t.sql(`UPDATE "${t.schema}".messages SET attempt = 59 WHERE id = $1`, [id])
    const [m] = await t.postbox.receive('r-huge')
    expect(m?.attempt).toBe(60)
    expect(await t.postbox.nack(m!)).toBe('retried')
    expect(Math.round((await row(id))!.available_in_ms / 86_400_000)).toBe(3650)
  })

  it('records any error value, even one Postgres text cannot hold as is', async () => {
    await t.postbox.createQueue('r-nack-err', { maxAttempts: 10 })
    await t.postbox.sendBatch('r-nack-err', [1, 2, 3])
    const [a, b, c] = await t.postbox.receive('r-nack-err', { max: 3 })
    const circular: Record<string, unknown> = { code: 42 }
    circular.self = circular
    await t.postbox.nack(a!, { error: 'bad byte \u0000 here' })
    await t.postbox.nack(b!, { error: circular })
    await t.postbox.nack(c!, { error: { code: 'E_TIMEOUT', retryable: true } })
    expect((await row(a!.id))!.last_error).toBe('bad byte \uFFFD here')
    expect((await row(b!.id))!.last_error).toBe('[object Object]')
    expect((await row(c!.id))!.last_error).toBe('{"code":"E_TIMEOUT","retryable":true}')
  })

  it('refuses a negative delay and unknown options, changing nothing', async () => {
    await t.postbox.createQueue('r-nack-bad')
    await t.postbox.send('r-nack-bad', 'x')
    const [m] = await t.postbox.receive('r-nack-bad')
    const before = await snapshot('r-nack-bad')
    await expect(t.postbox.nack(m!, { delay: -1 })).rejects.toThrow(InvalidOptionsError)
    await expect(t.postbox.nack(m!, { delay: '-5s' })).rejects.toThrow(InvalidOptionsError)
    await expect(t.postbox.nack(m!, { retry: true } as never)).rejects.toThrow(InvalidOptionsError)
    expect(await snapshot('r-nack-bad')).toEqual(before)
  })
})

describe('dead letters', () => {
  it('after maxAttempts a nacked message moves to the dead letter with its history', async () => {
    await t.postbox.createQueue('r-dl', { maxAttempts: 3, backoff: { base: 0, jitter: false } })
    const { id } = await t.postbox.send('r-dl', { job: 1 }, { dedupeKey: 'job-1', headers: { h: '1' } })
    const outcomes: string[] = []
    for (let attempt = 1; attempt <= 3; attempt++) {
      const m = await receiveWhenReady('r-dl')
      expect(m.attempt).toBe(attempt)
      outcomes.push(await t.postbox.nack(m, { error: new Error(`boom ${attempt}`) }))
    }
    expect(outcomes).toEqual(['retried', 'retried', 'dead'])
    const r = await row(id)
    expect(r).toMatchObject({ queue: 'r-dl.dead', original_queue: 'r-dl', original_attempt: 3, lease: null })
    expect(r!.last_error).toMatch(/boom 3/)
    expect(r!.dead_at).toBeInstanceOf(Date)
    expect(await t.postbox.receive('r-dl')).toEqual([])
    // The dedupe key is freed: the same job can be sent again.
    expect((await t.postbox.send('r-dl', { job: 1 }, { dedupeKey: 'job-1' })).duplicate).toBe(false)
    expect((await t.postbox.stats('r-dl'))[0]).toMatchObject({ ready: 1, dead: 1 })

    // A dead letter is an ordinary queue: its messages can be received, and start at attempt 1.
    const [dead] = await t.postbox.receive('r-dl.dead')
    expect(dead).toMatchObject({ id, queue: 'r-dl.dead', payload: { job: 1 }, headers: { h: '1' }, attempt: 1 })
    expect(dead!.lastError).toMatch(/boom 3/)
  })

  it('a dead letter with more attempts than its dead-letter queue allows is still delivered there', async () => {
    await t.postbox.createQueue('r-dl-many', { maxAttempts: 8, backoff: { base: 0, jitter: false } })
    const { id } = await t.postbox.send('r-dl-many', 'x')
    for (let i = 0; i < 8; i++) await t.postbox.nack(await receiveWhenReady('r-dl-many'))
    expect(await row(id)).toMatchObject({ queue: 'r-dl-many.dead', original_attempt: 8 })
    // r-dl-many.dead allows 5 attempts: its own count starts again.
    const [dead] = await t.postbox.receive('r-dl-many.dead')
    expect(dead).toMatchObject({ id, attempt: 1 })
  })

  it('nack({ deadLetter: true }) dead-letters at once; with no dead letter the message is dropped', async () => {
    await t.postbox.createQueue('r-dl2')
    await t.postbox.createQueue('r-drop', { deadLetter: false, maxAttempts: 1 })
    const { id } = await t.postbox.send('r-dl2', 'poison')
    const [m] = await t.postbox.receive('r-dl2')
    expect(await t.postbox.nack(m!, { deadLetter: true, error: 'cannot parse' })).toBe('dead')
    expect(await row(id)).toMatchObject({ queue: 'r-dl2.dead', original_queue: 'r-dl2', original_attempt: 1, last_error: 'cannot parse' })

    const dropped = await t.postbox.send('r-drop', 'x')
    const [d] = await t.postbox.receive('r-drop')
    expect(await t.postbox.nack(d!, { error: 'nope' })).toBe('dropped')
    expect(await row(dropped.id)).toBeUndefined()
  })

  it('a lease that runs out on the last attempt sends the message to the dead letter, not back', async () => {
    await t.postbox.createQueue('r-exhaust', { maxAttempts: 2 })
    const { id } = await t.postbox.send('r-exhaust', 'slow')
    const [first] = await t.postbox.receive('r-exhaust', { visibilityTimeout: 100 })
    expect(first?.attempt).toBe(1)
    const second = await receiveWhenReady('r-exhaust', { visibilityTimeout: 100 })
    expect(second.attempt).toBe(2)
    // The second lease runs out too: the next claim dead-letters the message.
    await waitFor('the message to reach the dead letter', async () => {
      expect(await t.postbox.receive('r-exhaust')).toEqual([])
      return (await row(id))?.queue === 'r-exhaust.dead'
    })
    const r = await row(id)
    expect(r).toMatchObject({ original_queue: 'r-exhaust', original_attempt: 2, last_error: 'lease expired on the last attempt' })
    await expect(t.postbox.ack(second)).rejects.toThrow(LeaseLostError)
  })

  it('a message released on its last attempt is delivered again, not dead-lettered', async () => {
    await t.postbox.createQueue('r-release', { maxAttempts: 1 })
    const { id } = await t.postbox.send('r-release', 'x')
    const [m] = await t.postbox.receive('r-release')
    // What a stopping worker does with work it could not finish.
    const released = await t.sql(`SELECT * FROM "${t.schema}".release(ARRAY[$1]::bigint[], ARRAY[$2]::uuid[])`, [id, m!.lease])
    expect(released).toHaveLength(1)
    expect(await row(id)).toMatchObject({ queue: 'r-release', attempt: 1, lease: null })
    const [again] = await t.postbox.receive('r-release', { visibilityTimeout: 50 })
    expect(again).toMatchObject({ id, attempt: 2 })
    // That delivery's lease running out is a real failure: now it is dead.
    await waitFor('the message to reach the dead letter', async () => {
      await t.postbox.receive('r-release')
      return (await row(id))?.queue === 'r-release.dead'
    })
  })

  it('an exhausted message does not take the place of a ready one in the claim', async () => {
    await t.postbox.createQueue('r-exhaust2', { maxAttempts: 1 })
    const exhausted = await t.postbox.send('r-exhaust2', 'first', { priority: 1 })
    await t.postbox.receive('r-exhaust2', { visibilityTimeout: 50 })
    const ready = await t.postbox.send('r-exhaust2', 'second')
    await waitFor('the lease to run out', async () => ((await row(exhausted.id))!.available_in_ms <= 0))
    const got = await t.postbox.receive('r-exhaust2', { max: 1 })
    expect(got.map((m) => m.id)).toEqual([ready.id])
    expect(await row(exhausted.id)).toMatchObject({ queue: 'r-exhaust2.dead' })
  })

  it('redrive moves dead messages back to their original queue, or to another, up to max', async () => {
    await t.postbox.createQueue('r-redrive', { maxAttempts: 1 })
    await t.postbox.createQueue('r-redrive-other')
    await t.postbox.sendBatch('r-redrive', ['a', 'b', 'c'])
    for (const m of await t.postbox.receive('r-redrive', { max: 3 })) expect(await t.postbox.nack(m, { error: 'bad' })).toBe('dead')
    expect((await t.postbox.stats('r-redrive'))[0]).toMatchObject({ total: 0, dead: 3 })

    expect(await t.postbox.redrive('r-redrive.dead', { max: 2 })).toBe(2)
    const back = await t.postbox.receive('r-redrive', { max: 10 })
    expect(back.map((m) => m.payload).sort()).toEqual(['a', 'b'])
    // Fresh attempts in the original queue; the last error stays for the next consumer to see.
    expect(back.every((m) => m.attempt === 1 && m.lastError === 'bad')).toBe(true)
    const rows = await Promise.all(back.map((m) => row(m.id)))
    expect(rows.every((r) => r?.original_queue === null && r?.original_attempt === null && r?.dead_at === null)).toBe(true)

    expect(await t.postbox.redrive('r-redrive.dead', { to: 'r-redrive-other' })).toBe(1)
    const [other] = await t.postbox.receive('r-redrive-other')
    expect(other).toMatchObject({ payload: 'c', attempt: 1 })
    expect(await t.postbox.redrive('r-redrive.dead')).toBe(0)
  })

  it('redrive leaves messages whose original queue was deleted, unless given a target', async () => {
    await t.postbox.createQueue('r-orphan-a', { maxAttempts: 1, deadLetter: 'r-shared.dead' })
    await t.postbox.createQueue('r-orphan-b', { maxAttempts: 1, deadLetter: 'r-shared.dead' })
    await t.postbox.send('r-orphan-a', 'a')
    await t.postbox.send('r-orphan-b', 'b')
    await t.postbox.nack((await t.postbox.receive('r-orphan-a'))[0]!)
    await t.postbox.nack((await t.postbox.receive('r-orphan-b'))[0]!)
    await t.postbox.deleteQueue('r-orphan-a')
    expect(await t.postbox.redrive('r-shared.dead')).toBe(1)
    expect((await t.postbox.receive('r-orphan-b'))[0]?.payload).toBe('b')
    const left = await t.sql<{ queue: string; original_queue: string }>(
      `SELECT queue, original_queue FROM "${t.schema}".messages WHERE queue = 'r-shared.dead'`,
    )
    expect(left).toEqual([{ queue: 'r-shared.dead', original_queue: 'r-orphan-a' }])
    expect(await t.postbox.redrive('r-shared.dead', { to: 'r-orphan-b' })).toBe(1)
    expect((await t.postbox.receive('r-orphan-b'))[0]?.payload).toBe('a')
  })

  it('redrive refuses unknown queues and bad options', async () => {
    await expect(t.postbox.redrive('r-none.dead')).rejects.toThrow(QueueNotFoundError)
    await t.postbox.createQueue('r-redrive2')
    await expect(t.postbox.redrive('r-redrive2.dead', { to: 'r-none' })).rejects.toThrow(QueueNotFoundError)
    await expect(t.postbox.redrive('r-redrive2.dead', { max: 0 })).rejects.toThrow(InvalidOptionsError)
    await expect(t.postbox.redrive('r-redrive2.dead', { limit: 1 } as never)).rejects.toThrow(InvalidOptionsError)
  })
})

describe('extend', () => {
  it('pushes the lease out from now, so the message is not redelivered', async () => {
    await t.postbox.createQueue('r-extend')
    const { id } = await t.postbox.send('r-extend', 'long job')
    const [m] = await t.postbox.receive('r-extend', { visibilityTimeout: 200 })
    await t.postbox.extend(m!, '10m')
    const r = await row(id)
    expect(r!.available_in_ms).toBeGreaterThan(599_000)
    expect(r!.lease).toBe(m!.lease)
    expect(r!.attempt).toBe(1)
    expect(await t.postbox.receive('r-extend')).toEqual([])
    // Extending can also shorten; the lease stays the same delivery's.
    await t.postbox.extend([m!], 1)
    const again = await receiveWhenReady('r-extend')
    expect(again).toMatchObject({ id, attempt: 2 })
    await expect(t.postbox.extend(m!, '1m')).rejects.toThrow(LeaseLostError)
  })

  it('refuses a zero or nonsense duration', async () => {
    await t.postbox.createQueue('r-extend2')
    await t.postbox.send('r-extend2', 'x')
    const [m] = await t.postbox.receive('r-extend2')
    await expect(t.postbox.extend(m!, 0)).rejects.toThrow(InvalidOptionsError)
    await expect(t.postbox.extend(m!, 'forever')).rejects.toThrow(InvalidOptionsError)
    await expect(t.postbox.extend(m!, -1000)).rejects.toThrow(InvalidOptionsError)
  })
})
