import { describe, expect, it } from 'vitest'
import { InvalidOptionsError, QueueNotFoundError } from '../src/errors.js'
import { startChildWorker, type ChildWorker } from './support/child-worker.js'
import { createFlowLedgers, maxClaimsInWindow, spanReport } from './support/flow-ledger.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'

// Flow control (DESIGN.md, "Flow control"): pause, maxInFlight, rateLimit and keyRateLimit are
// enforced by the claim in the database. Each limit is checked from ledgers written by the
// database clock (support/flow-ledger.ts): every claim by a trigger, every handling by its
// handler, in worker processes of their own.

const t = useTestSchema()

async function stopAll(workers: readonly ChildWorker[]): Promise<void> {
  for (const w of workers) w.kill('SIGTERM')
  await Promise.all(workers.map((w) => w.exited))
}

/** Three worker processes (support/child-worker.ts, `env` as they take it) until `queue` is empty. */
async function drainWithThreeWorkers(queue: string, env: Record<string, string>): Promise<void> {
  const workers = await Promise.all([startChildWorker(env), startChildWorker(env), startChildWorker(env)])
  try {
    await waitFor('every message handled', async () => (await t.postbox.stats(queue))[0]?.total === 0, { timeoutMs: 90_000, intervalMs: 100 })
  } finally {
    await stopAll(workers)
  }
}

/**
 * The claims counted in a queue's rate window rows: a key's own rows, or (`'shared'`) the rows of
 * its key limit's shared window (rate key '', shards below 0: migration 0018).
 */
async function windowCount(queue: string, rows: 'shared' | { key: string }): Promise<number> {
  const [row] = await t.sql<{ n: number }>(
    `SELECT coalesce(sum(c), 0)::int AS n FROM "${t.schema}".rate_windows w, unnest(w.counts) AS c
     WHERE w.queue = $1 AND CASE WHEN $2::text IS NULL THEN w.rate_key = '' AND w.shard < 0 ELSE w.rate_key = $2 END`,
    [queue, rows === 'shared' ? null : rows.key],
  )
  return row!.n
}

describe('pauseQueue and resumeQueue', () => {
  it('a paused queue accepts sends, hands out nothing, shows paused, and wakes its idle worker on resume', async () => {
    await t.postbox.createQueue('paused')
    expect(await t.postbox.pauseQueue('paused')).toBe(true)
    expect(await t.postbox.pauseQueue('paused')).toBe(false)
    const { id } = await t.postbox.send('paused', { n: 1 })
    expect(await t.postbox.receive('paused', { max: 10 })).toEqual([])
    const [stats] = await t.postbox.stats('paused')
    expect(stats).toMatchObject({ queue: 'paused', ready: 1, paused: true })
    expect((await t.postbox.getQueue('paused'))?.paused).toBe(true)
    const [view] = await t.sql<{ paused: boolean }>(`SELECT paused FROM "${t.schema}".queue_stats WHERE queue = 'paused'`)
    expect(view?.paused).toBe(true)

    // A worker that polls once a minute: only the resume's NOTIFY can wake it in time.
    const postbox = t.newPostbox({ pollInterval: '60s' })
    const handled: string[] = []
    const worker = postbox.work('paused', async (m) => void handled.push(m.id))
    try {
      await postbox.listen()
      // It has looked (and found nothing) and now waits: its waiter row is registered.
      await waitFor('the worker to wait', async () => (await t.sql(`SELECT 1 FROM "${t.schema}".waiters WHERE queue = 'paused'`)).length > 0)
      expect(handled).toEqual([])
      expect(await t.postbox.resumeQueue('paused')).toBe(true)
      expect(await t.postbox.resumeQueue('paused')).toBe(false)
      await waitFor('the message handled after resume', () => handled.includes(id), { timeoutMs: 20_000 })
      expect((await t.postbox.stats('paused'))[0]?.paused).toBe(false)
    } finally {
      await worker.stop()
      await postbox.close()
    }
  })

  it('unknown queues and bad names get typed errors', async () => {
    await expect(t.postbox.pauseQueue('no-such-queue')).rejects.toBeInstanceOf(QueueNotFoundError)
    await expect(t.postbox.resumeQueue('no-such-queue')).rejects.toBeInstanceOf(QueueNotFoundError)
    await expect(t.postbox.pauseQueue('Bad Name')).rejects.toThrow(/queue name/)
  })
})

describe('limits: options and bad input', () => {
  it('createQueue and updateQueue set, show and remove the limits', async () => {
    const info = await t.postbox.createQueue('limited', { maxInFlight: 3, rateLimit: { limit: 10, per: '1s' }, keyRateLimit: { limit: 2, per: 500 } })
    expect(info).toMatchObject({ maxInFlight: 3, rateLimit: { limit: 10, per: 1000 }, keyRateLimit: { limit: 2, per: 500 }, paused: false })
    // Asking again with the same limits is fine; with others it is a mistake, as for every setting.
    await t.postbox.createQueue('limited', { maxInFlight: 3 })
    await expect(t.postbox.createQueue('limited', { maxInFlight: 4 })).rejects.toThrow(/max_in_flight/)
    const changed = await t.postbox.updateQueue('limited', { maxInFlight: false, rateLimit: { limit: 5, per: '2s' } })
    expect(changed).toMatchObject({ maxInFlight: false, rateLimit: { limit: 5, per: 2000 }, keyRateLimit: { limit: 2, per: 500 } })
    expect(await t.postbox.updateQueue('limited', { keyRateLimit: false, rateLimit: false })).toMatchObject({ rateLimit: false, keyRateLimit: false })
    expect((await t.postbox.listQueues()).find((q) => q.name === 'limited')).toMatchObject({ maxInFlight: false, rateLimit: false })
  })

  it('non-positive limits, a rate key over 512 bytes and unknown queues are refused, and nothing is written', async () => {
    const bad = [
      { maxInFlight: 0 }, { maxInFlight: -1 }, { maxInFlight: 1.5 },
      { rateLimit: { limit: 0, per: '1s' } }, { rateLimit: { limit: 1, per: 0 } }, { rateLimit: { limit: 1, per: '-1s' } },
      { keyRateLimit: { limit: -2, per: '1s' } }, { keyRateLimit: { limit: 2 } }, { rateLimit: { limit: 2, per: '1s', burst: 3 } },
    ]
    for (const options of bad) {
      await expect(t.postbox.createQueue('refused', options as never), JSON.stringify(options)).rejects.toBeInstanceOf(InvalidOptionsError)
    }
    expect(await t.postbox.getQueue('refused')).toBeNull()
    await t.postbox.createQueue('kept', { maxInFlight: 2 })
    await expect(t.postbox.updateQueue('kept', { maxInFlight: 0 })).rejects.toBeInstanceOf(InvalidOptionsError)
    expect((await t.postbox.getQueue('kept'))?.maxInFlight).toBe(2)
    await expect(t.postbox.updateQueue('no-such-queue', { maxInFlight: 2 })).rejects.toBeInstanceOf(QueueNotFoundError)

    const before = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".messages`)
    await expect(t.postbox.send('kept', {}, { rateKey: 'é'.repeat(257) })).rejects.toBeInstanceOf(InvalidOptionsError) // 514 bytes
    await expect(t.postbox.send('kept', {}, { rateKey: '' })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.sendBatch('kept', [{ payload: {}, rateKey: 'x'.repeat(513) }])).rejects.toBeInstanceOf(InvalidOptionsError)
    // The SQL API: the header is checked by the table, and the limits by set_flow_limits.
    await expect(t.sql(`SELECT "${t.schema}".send('kept', '{}', headers => jsonb_build_object('postbox-rate-key', repeat('x', 513)))`))
      .rejects.toMatchObject({ code: '23514', constraint: 'messages_rate_key_valid' })
    await expect(t.sql(`SELECT "${t.schema}".set_flow_limits('kept', max_in_flight => 0)`)).rejects.toMatchObject({ code: 'PBV01' })
    await expect(t.sql(`SELECT "${t.schema}".set_flow_limits('kept', rate_limit => 5, rate_per => '0')`)).rejects.toMatchObject({ code: 'PBV01' })
    await expect(t.sql(`SELECT "${t.schema}".set_flow_limits('kept', rate_limit => 5)`)).rejects.toMatchObject({ code: 'PBV01' })
    await expect(t.sql(`SELECT "${t.schema}".set_flow_limits('no-such-queue', max_in_flight => 1)`)).rejects.toMatchObject({ code: 'PBQ01' })
    expect(await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".messages`)).toEqual(before)
    expect((await t.postbox.getQueue('kept'))?.maxInFlight).toBe(2)
    // A rate key of exactly 512 bytes is fine, and travels as the header.
    const { id } = await t.postbox.send('kept', {}, { rateKey: 'é'.repeat(256) })
    const [row] = await t.sql<{ key: string }>(`SELECT headers ->> 'postbox-rate-key' AS key FROM "${t.schema}".messages WHERE id = $1`, [id])
    expect(row?.key).toBe('é'.repeat(256))
    await t.postbox.purgeQueue('kept')
  })
})

// These start worker processes: seconds each on a loaded machine, and waits of up to 90 s.
describe('maxInFlight', { timeout: 180_000 }, () => {
  it('an ack frees a slot and wakes a consumer that went idle at the cap', async () => {
    await t.postbox.createQueue('capped-wake', { maxInFlight: 1 })
    const [first, second] = await t.postbox.sendBatch('capped-wake', [{ n: 1 }, { n: 2 }])
    const [held] = await t.postbox.receive('capped-wake', { visibilityTimeout: '1h' }) // takes the one slot
    expect(held?.id).toBe(first)
    // A worker that polls once an hour: only a notification can wake it in time.
    const postbox = t.newPostbox({ pollInterval: '1h' })
    const handled: string[] = []
    const worker = postbox.work('capped-wake', async (m) => void handled.push(m.id))
    try {
      await postbox.listen()
      // It found the second message held back by the cap, and now waits.
      await waitFor('the worker to wait', async () => (await t.sql(`SELECT 1 FROM "${t.schema}".waiters WHERE queue = 'capped-wake'`)).length > 0)
      expect(handled).toEqual([])
      await t.postbox.ack(held!)
      await waitFor('the second message handled after the ack', () => handled.includes(second!), { timeoutMs: 20_000 })
    } finally {
      await worker.stop()
      await postbox.close()
    }
  })

  it('messages in flight when a cap is set or changed count against it', async () => {
    await t.postbox.createQueue('capped-later')
    await t.postbox.sendBatch('capped-later', [1, 2, 3, 4, 5, 6].map((n) => ({ n })))
    const early = await t.postbox.receive('capped-later', { max: 3, visibilityTimeout: '1h' })
    expect(early).toHaveLength(3)
    // Three in flight already: a cap of 3 leaves no room, and one of 4 leaves one.
    await t.postbox.updateQueue('capped-later', { maxInFlight: 3 })
    expect(await t.postbox.receive('capped-later', { max: 3 })).toEqual([])
    await t.postbox.updateQueue('capped-later', { maxInFlight: 4 })
    const one = await t.postbox.receive('capped-later', { max: 3, visibilityTimeout: '1h' })
    expect(one).toHaveLength(1)
    // Acking two of the early ones frees two places, and not more.
    await t.postbox.ack(early.slice(0, 2))
    expect(await t.postbox.receive('capped-later', { max: 3, visibilityTimeout: '1h' })).toHaveLength(2)
    expect(await t.postbox.receive('capped-later', { max: 3 })).toEqual([])
    await t.postbox.purgeQueue('capped-later')
  })

  it('a slot row is looked at only when it could be full, and then gives back the places of acked messages', async () => {
    // 64 places in 32 rows of 2: a row is looked at (which of its messages are still in flight)
    // only when what it holds and what a claim wants pass its capacity (migration 0017).
    await t.postbox.createQueue('capped-lazy', { maxInFlight: 64 })
    await t.postbox.sendBatch('capped-lazy', Array.from({ length: 200 }, (_, n) => ({ n })))
    const first = await t.postbox.receive('capped-lazy', { max: 100, visibilityTimeout: '1h' })
    expect(first).toHaveLength(64)
    expect(await t.postbox.receive('capped-lazy', { max: 100 })).toEqual([])
    await t.postbox.ack(first.slice(0, 40))
    const second = await t.postbox.receive('capped-lazy', { max: 100, visibilityTimeout: '1h' })
    expect(second).toHaveLength(40)
    expect(await t.postbox.receive('capped-lazy', { max: 100 })).toEqual([])
    await t.postbox.ack([...first.slice(40), ...second])
    expect(await t.postbox.receive('capped-lazy', { max: 100, visibilityTimeout: '1h' })).toHaveLength(64)
    await t.postbox.purgeQueue('capped-lazy')

    // Far from the cap, a row keeps the ids of acked messages until it would pass 400 or could
    // fill, and a claim's token once however many ids it counted (migration 0019).
    await t.postbox.createQueue('capped-far', { maxInFlight: 10_000 })
    await t.postbox.sendBatch('capped-far', Array.from({ length: 20 }, (_, n) => ({ n })))
    const c = await t.pool.connect()
    try {
      const claimed = async () => (await c.query<{ id: string; lease: string }>(`SELECT id::text, lease::text FROM "${t.schema}".claim('capped-far', 10, '1h')`)).rows
      const held = async () =>
        (await c.query<{ ids: number; tokens: number }>(
          `SELECT cardinality(message_ids) AS ids, cardinality(leases) AS tokens FROM "${t.schema}".flight_slots WHERE queue = 'capped-far' AND slot = pg_backend_pid() % 32 + 1`,
        )).rows[0]!
      const firstTen = await claimed()
      await c.query(`SELECT "${t.schema}".ack($1::bigint[], $2::uuid[])`, [firstTen.map((m) => m.id), firstTen.map((m) => m.lease)])
      expect(await claimed()).toHaveLength(10)
      expect(await held()).toEqual({ ids: 20, tokens: 2 })
    } finally {
      c.release()
    }
    await t.postbox.purgeQueue('capped-far')
  })

  it('a slot row looked at short of its capacity keeps counting what it did not look up', async () => {
    // 20,000 places in 32 rows of 625: a row is looked at when it lists 400 ids, all but its
    // newest 100, which keep the tokens of the row's newest 100 claims (migration 0019). Claims of
    // one message each, every other one acked at once: every message still in flight must stay
    // listed in the row with its claim's token, and the acked ones must go.
    await t.postbox.createQueue('capped-margin', { maxInFlight: 20_000 })
    await t.postbox.sendBatch('capped-margin', Array.from({ length: 900 }, (_, n) => ({ n })))
    const c = await t.pool.connect()
    try {
      for (let i = 0; i < 900; i++) {
        const { rows } = await c.query<{ id: string; lease: string }>(`SELECT id::text, lease::text FROM "${t.schema}".claim('capped-margin', 1, '1h')`)
        expect(rows).toHaveLength(1)
        if (i % 2 === 1) await c.query(`SELECT "${t.schema}".ack($1::bigint[], $2::uuid[])`, [[rows[0]!.id], [rows[0]!.lease]])
      }
      const [row] = (await c.query<{ ids: number; tokens: number; unlisted: number; in_flight: number }>(
        `SELECT cardinality(s.message_ids) AS ids, cardinality(s.leases) AS tokens,
                (SELECT count(*)::int FROM "${t.schema}".messages m WHERE m.queue = s.queue AND m.available_at > now()
                   AND NOT (m.id = ANY (s.message_ids) AND m.lease = ANY (s.leases))) AS unlisted,
                (SELECT count(*)::int FROM "${t.schema}".messages m WHERE m.queue = s.queue AND m.available_at > now()) AS in_flight
         FROM "${t.schema}".flight_slots s WHERE s.queue = 'capped-margin' AND s.slot = pg_backend_pid() % 32 + 1`,
      )).rows
      expect(row!.in_flight).toBe(450)
      expect(row!.unlisted).toBe(0)
      expect(row!.ids).toBeLessThan(900) // the row was looked at: acked ids went
      expect(row!.ids).toBeGreaterThanOrEqual(450)
      expect(row!.tokens).toBeLessThanOrEqual(row!.ids) // one claim, one token
    } finally {
      c.release()
    }
    await t.postbox.purgeQueue('capped-margin')
  })

  it('a message claimed again through the same row counts once there', async () => {
    // 64 places in 32 rows of 2. A message whose lease ended is claimed again through the row
    // that still lists it: listed twice, it counts once when the row is looked at (migration 0019).
    await t.postbox.createQueue('capped-twice', { maxInFlight: 64 })
    const x = (await t.postbox.send('capped-twice', { n: 1 })).id
    const c = await t.pool.connect()
    try {
      const claim = async (lease: string) =>
        (await c.query<{ id: string }>(`SELECT id::text FROM "${t.schema}".claim('capped-twice', 1, $1::interval)`, [lease])).rows.map((m) => m.id)
      const row = async () =>
        (await c.query<{ ids: string[] }>(`SELECT message_ids::text[] AS ids FROM "${t.schema}".flight_slots WHERE queue = 'capped-twice' AND slot = pg_backend_pid() % 32 + 1`)).rows[0]!.ids
      expect(await claim('20 milliseconds')).toEqual([x])
      await new Promise((r) => setTimeout(r, 50))
      expect(await claim('1 hour')).toEqual([x]) // its lease ended: claimed again
      expect(await row()).toEqual([x, x])
      const y = (await t.postbox.send('capped-twice', { n: 2 })).id
      expect(await claim('1 hour')).toEqual([y]) // the row is looked at: x once, one place left
      expect(await row()).toEqual([x, y])
    } finally {
      c.release()
    }
    await t.postbox.purgeQueue('capped-twice')
  })

  it('a message claimed again among the ids a look-up skips counts once', async () => {
    // 20,000 places in 32 rows of 625: looked at past 400 ids, all but the newest 100. X is
    // listed first, then claimed again after 350 others: at the look-up its first listing is
    // among the ids looked up, its second among the newest, and it counts once (migration 0019).
    await t.postbox.createQueue('capped-skipped', { maxInFlight: 20_000 })
    const c = await t.pool.connect()
    try {
      const claim = async (n: number, lease: string) =>
        (await c.query<{ id: string }>(`SELECT id::text FROM "${t.schema}".claim('capped-skipped', $1, $2::interval)`, [n, lease])).rows.map((m) => m.id)
      const listed = async (id: string) =>
        (await c.query<{ n: number }>(
          `SELECT cardinality(array_positions(message_ids, $1::bigint)) AS n FROM "${t.schema}".flight_slots WHERE queue = 'capped-skipped' AND slot = pg_backend_pid() % 32 + 1`,
          [id],
        )).rows[0]!.n
      const x = (await t.postbox.send('capped-skipped', { n: 'x' })).id
      expect(await claim(1, '1 second')).toEqual([x])
      await t.postbox.sendBatch('capped-skipped', Array.from({ length: 350 }, (_, n) => ({ n })))
      for (let i = 0; i < 350; i++) expect(await claim(1, '1 hour')).toHaveLength(1)
      await new Promise((r) => setTimeout(r, 1_100))
      expect(await claim(1, '1 hour')).toEqual([x]) // its lease ended: claimed again
      expect(await listed(x)).toBe(2)
      await t.postbox.sendBatch('capped-skipped', Array.from({ length: 50 }, (_, n) => ({ n })))
      for (let i = 0; i < 50; i++) expect(await claim(1, '1 hour')).toHaveLength(1) // past 400: looked at
      expect(await listed(x)).toBe(1)
    } finally {
      c.release()
    }
    await t.postbox.purgeQueue('capped-skipped')
  })

  it('three worker processes never hold more than maxInFlight at once', async () => {
    await createFlowLedgers(t.pool, t.schema)
    await t.postbox.createQueue('capped', { maxInFlight: 4 })
    await t.postbox.sendBatch('capped', Array.from({ length: 150 }, (_, i) => ({ n: i })))
    // Each process could run 4 at once by itself: only the queue's cap keeps the total at 4.
    const env = {
      DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: 'capped', HANDLER: 'span', HANDLER_MS: '15', CONCURRENCY: '4', PREFETCH: '0', VISIBILITY_TIMEOUT: '30s',
    }
    await drainWithThreeWorkers('capped', env)
    const spans = await spanReport(t.pool, t.schema)
    const [claims] = await t.sql<{ n: number; pids: number }>(
      `SELECT count(*)::int AS n, (SELECT count(DISTINCT pid)::int FROM "${t.schema}".span_ledger) AS pids FROM "${t.schema}".claim_ledger WHERE queue = 'capped'`,
    )
    console.log(`maxInFlight 4, 3 processes: ${JSON.stringify({ ...spans, claims })}`)
    expect(spans).toMatchObject({ spans: 150, unfinished: 0 })
    expect(spans.maxConcurrent).toBeLessThanOrEqual(4)
    expect(spans.maxConcurrent).toBeGreaterThan(1) // it did run concurrently
    expect(claims!.pids).toBeGreaterThan(1)
  }, 180_000)

  it("a crashed consumer's slot comes back when its lease ends, not before", async () => {
    await createFlowLedgers(t.pool, t.schema)
    await t.postbox.createQueue('one-slot', { maxInFlight: 1, visibilityTimeout: '2s' })
    await t.postbox.sendBatch('one-slot', [{ n: 1 }, { n: 2 }])
    const child = await startChildWorker({ DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: 'one-slot', HANDLER: 'hang', CONCURRENCY: '2', VISIBILITY_TIMEOUT: '2s' })
    let leaseEnd: Date
    try {
      const started = await child.next((e) => e.event === 'started')
      // The slot is taken: the other message stays where it is, however often we ask.
      expect(await t.postbox.receive('one-slot', { max: 2 })).toEqual([])
      child.kill('SIGKILL')
      await child.exited
      const [claim] = await t.sql<{ lease_until: Date }>(
        `SELECT max(m.available_at) AS lease_until FROM "${t.schema}".messages m WHERE m.id = $1`, [started.id],
      )
      leaseEnd = claim!.lease_until
    } finally {
      child.kill('SIGKILL')
    }
    const [got] = await waitFor('a claim once the lease ended', async () => {
      const messages = await t.postbox.receive('one-slot', { max: 2, visibilityTimeout: '30s' })
      return messages.length > 0 ? messages : undefined
    }, { timeoutMs: 15_000, intervalMs: 50 })
    const [last] = await t.sql<{ claimed_at: Date }>(
      `SELECT claimed_at FROM "${t.schema}".claim_ledger WHERE queue = 'one-slot' ORDER BY claim DESC LIMIT 1`,
    )
    expect(got).toBeDefined()
    expect(last!.claimed_at.getTime()).toBeGreaterThanOrEqual(leaseEnd.getTime())
    // Still one at a time: the second message waits for this one.
    expect(await t.postbox.receive('one-slot', { max: 2 })).toEqual([])
    await t.postbox.ack(got!)
    expect(await t.postbox.receive('one-slot', { max: 2 })).toHaveLength(1)
    await t.postbox.purgeQueue('one-slot')
  }, 180_000)
})

describe('rate limits', { timeout: 180_000 }, () => {
  it("a changed rateLimit counts the claims already in the queue's window", async () => {
    await t.postbox.createQueue('rate-changed', { rateLimit: { limit: 5, per: '1h' } })
    await t.postbox.sendBatch('rate-changed', Array.from({ length: 30 }, (_, n) => ({ n })))
    const taken = async () => (await t.postbox.receive('rate-changed', { max: 30, visibilityTimeout: '1h' })).length
    expect(await taken()).toBe(5)
    expect(await taken()).toBe(0)
    // The window is split over one row per claim allowed (up to 16): the 5 claims stay counted.
    await t.postbox.updateQueue('rate-changed', { rateLimit: { limit: 8, per: '1h' } })
    expect(await taken()).toBe(3)
    await t.postbox.updateQueue('rate-changed', { rateLimit: { limit: 4, per: '1h' } })
    expect(await taken()).toBe(0)
    await t.postbox.updateQueue('rate-changed', { rateLimit: { limit: 100, per: '1h' } })
    expect(await taken()).toBe(22)
    await t.postbox.purgeQueue('rate-changed')
  })

  it('per rate key and for the queue: no window of `per` holds more than `limit` claims, across processes, retries included', async () => {
    await createFlowLedgers(t.pool, t.schema)
    await t.postbox.createQueue('polite', { keyRateLimit: { limit: 2, per: '400ms' }, rateLimit: { limit: 30, per: '300ms' }, backoff: { type: 'fixed', base: 0 } })
    const domains = Array.from({ length: 12 }, (_, i) => `site-${i}.example`)
    // Some messages fail once (retries count as claims); a few have no rate key.
    await t.postbox.sendBatch('polite', [
      ...Array.from({ length: 120 }, (_, i) => ({ payload: { n: i, failFirst: i % 10 === 0 }, rateKey: domains[i % domains.length]! })),
      ...Array.from({ length: 10 }, (_, i) => ({ n: 1000 + i })),
    ])
    const env = { DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: 'polite', HANDLER: 'span', HANDLER_MS: '1', CONCURRENCY: '8', VISIBILITY_TIMEOUT: '30s', POLL_INTERVAL: '50ms' }
    await drainWithThreeWorkers('polite', env)
    const perKey = await maxClaimsInWindow(t.pool, t.schema, 'polite', 400, true)
    const perQueue = await maxClaimsInWindow(t.pool, t.schema, 'polite', 300, false)
    const [claims] = await t.sql<{ n: number; retries: number }>(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE attempt > 1)::int AS retries FROM "${t.schema}".claim_ledger WHERE queue = 'polite'`,
    )
    console.log(`rate limits, 3 processes: ${JSON.stringify({ perKey, perQueue, claims })}`)
    expect(claims).toEqual({ n: 142, retries: 12 })
    expect(perKey).toBeLessThanOrEqual(2)
    expect(perKey).toBe(2) // the limit was reached, so it was what held
    expect(perQueue).toBeLessThanOrEqual(30)
  }, 180_000)

  it('1,000 keys at 2/s under a busy worker: no key over its limit in any second', async () => {
    // Many keys per claim, claims that wait for each other's key locks (so their transactions'
    // start times come out of order), and the occasional clean-up of idle keys' rows: an earlier
    // version let a third claim of a key into one second here, about one run in three.
    await createFlowLedgers(t.pool, t.schema)
    await t.postbox.createQueue('many-keys', { keyRateLimit: { limit: 2, per: '1s' } })
    await t.sql(
      `INSERT INTO "${t.schema}".messages (queue, payload, headers)
       SELECT 'many-keys', '{}', jsonb_build_object('postbox-rate-key', 'site-' || (g % 1000)) FROM generate_series(1, 8000) g`,
    )
    const worker = t.postbox.work('many-keys', () => {}, { concurrency: 50 })
    try {
      // 3,000 claims: each key claimed 3 times on average, so keys did meet their limit.
      await waitFor('3,000 claims', async () => {
        const [row] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".claim_ledger WHERE queue = 'many-keys'`)
        return (row?.n ?? 0) >= 3000
      }, { timeoutMs: 100_000, intervalMs: 100 })
    } finally {
      await worker.stop()
    }
    const perKey = await maxClaimsInWindow(t.pool, t.schema, 'many-keys', 1000, true)
    const [claims] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".claim_ledger WHERE queue = 'many-keys'`)
    console.log(`1,000 keys at 2/s: ${JSON.stringify({ perKey, claims: claims!.n })}`)
    expect(perKey).toBe(2)
    await t.postbox.purgeQueue('many-keys')
  }, 120_000)

  it('a connection borrows ahead from a window far from its limit, spends it without writing the window, and loses it on rollback or a change of limits', async () => {
    // 320,000 an hour per key: the key limit's shared window allows 20,000 (a sixteenth) in rows
    // of 1,250, so a claim of one leaves its row at least half empty and borrows 32 more
    // (migrations 0017, 0018). Its key's own rows are not touched at all.
    await t.postbox.createQueue('borrowing', { keyRateLimit: { limit: 320_000, per: '1h' } })
    await t.postbox.sendBatch('borrowing', Array.from({ length: 80 }, (_, n) => ({ payload: { n }, rateKey: 'k.example' })))
    const counted = () => windowCount('borrowing', 'shared')
    const one = `SELECT count(*)::int AS n FROM "${t.schema}".claim('borrowing', 1, '1h')`
    const [a, b] = [await t.pool.connect(), await t.pool.connect()]
    try {
      const claim = async (c: typeof a) => (await c.query<{ n: number }>(one)).rows[0]!.n
      expect(await claim(a)).toBe(1)
      expect(await counted()).toBe(33) // its claim and 32 borrowed
      for (let i = 0; i < 32; i++) expect(await claim(a)).toBe(1)
      expect(await counted()).toBe(33) // spent from the budget: the window was not written
      expect(await claim(b)).toBe(1) // another connection borrows for itself
      expect(await counted()).toBe(66)
      expect(await claim(a)).toBe(1) // a's budget is spent: it borrows again
      expect(await counted()).toBe(99)
      // A claim rolled back gives its budget back with its messages.
      await a.query('BEGIN')
      expect(await claim(a)).toBe(1)
      await a.query('ROLLBACK')
      for (let i = 0; i < 4; i++) expect(await claim(a)).toBe(1)
      expect(await counted()).toBe(99)
      // New limits: budgets made under the old ones are not spent.
      expect(await claim(b)).toBe(1) // from b's budget
      expect(await counted()).toBe(99)
      await t.postbox.updateQueue('borrowing', { keyRateLimit: { limit: 320_000, per: '2h' } })
      const before = await counted()
      expect(await claim(b)).toBe(1)
      expect(await counted()).toBe(before + 33)
      expect(await windowCount('borrowing', { key: 'k.example' })).toBe(0) // the key's own rows: never made
    } finally {
      a.release()
      b.release()
    }
    await t.postbox.purgeQueue('borrowing')
  })

  it('the shared window counts the most candidates a claim takes of one key; when it is full, the keys\' own rows count and lend as before', async () => {
    await t.postbox.createQueue('shared-most', { keyRateLimit: { limit: 1_600_000, per: '1h' } })
    await t.postbox.sendBatch('shared-most', ['a', 'a', 'b', 'a', 'c', 'c'].map((key, n) => ({ payload: { n }, rateKey: `${key}.example` })))
    const c = await t.pool.connect()
    try {
      // Rows of 6,250: the claim of six (three of a, two of c, one of b) counts 3 and borrows 96.
      await c.query(`SELECT * FROM "${t.schema}".claim('shared-most', 6, '1h')`)
      expect(await windowCount('shared-most', 'shared')).toBe(3 + 96)
      for (const key of ['a', 'b', 'c']) expect(await windowCount('shared-most', { key: `${key}.example` })).toBe(0)
    } finally {
      c.release()
    }
    // The shared window full: a key's own rows (the limit less the shared window's sixteenth,
    // 30,000 an hour: 16 rows of 1,875) count a claim and lend 32 more, spent without writing them.
    await t.postbox.createQueue('shared-full', { keyRateLimit: { limit: 32_000, per: '1h' } })
    await t.postbox.sendBatch('shared-full', Array.from({ length: 40 }, (_, n) => ({ payload: { n }, rateKey: 'k.example' })))
    await t.sql(
      `UPDATE "${t.schema}".rate_windows w SET stamps = ARRAY[now()], counts = ARRAY[125], free_at = now() + interval '1 hour'
       WHERE w.queue = 'shared-full' AND w.rate_key = '' AND w.shard < 0`,
    )
    const d = await t.pool.connect()
    try {
      const claim = async () => (await d.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".claim('shared-full', 1, '1h')`)).rows[0]!.n
      expect(await claim()).toBe(1)
      expect(await windowCount('shared-full', { key: 'k.example' })).toBe(33)
      for (let i = 0; i < 32; i++) expect(await claim()).toBe(1)
      expect(await windowCount('shared-full', { key: 'k.example' })).toBe(33)
      expect(await windowCount('shared-full', 'shared')).toBe(2000) // as it was filled
    } finally {
      d.release()
    }
    await t.postbox.purgeQueue('shared-full')
  })

  it('a key gets its whole limit, the shared window\'s sixteenth and its own rows\' rest, and not one claim more', async () => {
    // 160 an hour: the shared window allows 10 (ten rows of 1), the key's own rows 150.
    await t.postbox.createQueue('shared-and-rows', { keyRateLimit: { limit: 160, per: '1h' } })
    await t.postbox.sendBatch('shared-and-rows', Array.from({ length: 200 }, (_, n) => ({ payload: { n }, rateKey: 'k.example' })))
    let claimed = 0
    for (let i = 0; i < 170; i++) claimed += (await t.postbox.receive('shared-and-rows', { max: 1 })).length
    expect(claimed).toBe(160)
    expect(await windowCount('shared-and-rows', 'shared')).toBe(10)
    expect(await windowCount('shared-and-rows', { key: 'k.example' })).toBe(150)
    await t.postbox.purgeQueue('shared-and-rows')
  })

  it('a budget whose borrowing transaction did not commit is not spent', async () => {
    // A transaction prepared for two-phase commit keeps its session settings even when it is
    // rolled back later; here the budget is written by hand, naming a transaction rolled back.
    await t.postbox.createQueue('unborrowed', { keyRateLimit: { limit: 32_000, per: '1h' } })
    await t.postbox.sendBatch('unborrowed', Array.from({ length: 3 }, (_, n) => ({ payload: { n }, rateKey: 'k.example' })))
    const c = await t.pool.connect()
    try {
      await c.query('BEGIN')
      const { rows: [aborted] } = await c.query<{ xid: string }>('SELECT pg_current_xact_id()::text AS xid')
      await c.query('ROLLBACK')
      const { rows: [names] } = await c.query<{ name: string; gen: string }>(
        `SELECT 'postbox_budget_' || $1 || '.q' || to_hex(hashtextextended('unborrowed', 0)) AS name,
                concat_ws('/', f.rate_limit, f.rate_per, f.key_rate_limit, f.key_rate_per, f.updated_at) AS gen
         FROM "${t.schema}".queue_flow f WHERE f.queue = 'unborrowed'`, [t.schema])
      const budget = { queue: 'unborrowed', gen: names!.gen, xid: aborted!.xid, shared: [100, Date.now() / 1000 + 3600] }
      const counted = () => windowCount('unborrowed', 'shared')
      await c.query('SELECT set_config($1, $2, false)', [names!.name, JSON.stringify(budget)])
      await c.query(`SELECT * FROM "${t.schema}".claim('unborrowed', 1, '1h')`)
      expect(await counted()).toBe(33) // counted in the window (and borrowed anew), not taken from the false budget
      // The same budget naming a committed transaction is spent: the window is not written.
      await c.query('BEGIN')
      const { rows: [committed] } = await c.query<{ xid: string }>('SELECT pg_current_xact_id()::text AS xid')
      await c.query('COMMIT')
      await c.query('SELECT set_config($1, $2, false)', [names!.name, JSON.stringify({ ...budget, xid: committed!.xid })])
      await c.query(`SELECT * FROM "${t.schema}".claim('unborrowed', 1, '1h')`)
      expect(await counted()).toBe(33)
    } finally {
      c.release()
    }
    await t.postbox.purgeQueue('unborrowed')
  })

  it('budgets borrowed by many connections keep every window of `per` within the limit', async () => {
    // Limits a fleet reaches, with rows large enough that claims borrow while their windows are
    // less than half full (a key's own rows hold 23 or 24, the queue's 62: a claim of a few of a
    // key, or of 8 for the queue, leaves room to lend): the borrowed claims must be counted, so
    // no window holds more than its limit.
    await createFlowLedgers(t.pool, t.schema)
    await t.postbox.createQueue('lending', { keyRateLimit: { limit: 400, per: '1s' }, rateLimit: { limit: 1000, per: '1s' } })
    await t.postbox.sendBatch('lending', Array.from({ length: 3000 }, (_, i) => ({ payload: { n: i }, rateKey: `site-${i % 4}.example` })))
    const env = { DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: 'lending', HANDLER: 'span', HANDLER_MS: '1', CONCURRENCY: '8', VISIBILITY_TIMEOUT: '30s', POLL_INTERVAL: '20ms' }
    await drainWithThreeWorkers('lending', env)
    const perKey = await maxClaimsInWindow(t.pool, t.schema, 'lending', 1000, true)
    const perQueue = await maxClaimsInWindow(t.pool, t.schema, 'lending', 1000, false)
    console.log(`budgets, 3 processes: ${JSON.stringify({ perKey, perQueue })}`)
    expect(perKey).toBeLessThanOrEqual(400)
    expect(perQueue).toBeLessThanOrEqual(1000)
    expect(perQueue).toBeGreaterThan(400) // the claims came near the queue's limit (1,000 when the machine is not busy)
  }, 180_000)

  it('a throttled key waits unclaimed: its messages are never claimed and given back', async () => {
    await createFlowLedgers(t.pool, t.schema)
    await t.postbox.createQueue('one-key', { keyRateLimit: { limit: 3, per: '1h' } })
    await t.postbox.sendBatch('one-key', [
      ...Array.from({ length: 10 }, (_, i) => ({ payload: { n: i }, rateKey: 'slow.example' })),
      { payload: { n: 99 }, rateKey: 'other.example' },
    ])
    const first = await t.postbox.receive('one-key', { max: 20 })
    expect(first.map((m) => m.headers['postbox-rate-key']).sort()).toEqual(['other.example', 'slow.example', 'slow.example', 'slow.example'])
    for (let i = 0; i < 5; i++) expect(await t.postbox.receive('one-key', { max: 20 })).toEqual([])
    // Only the four claims were ever made: nothing was claimed and released again.
    const [row] = await t.sql<{ claims: number; attempts: number }>(
      `SELECT (SELECT count(*)::int FROM "${t.schema}".claim_ledger WHERE queue = 'one-key') AS claims,
              (SELECT sum(attempt)::int FROM "${t.schema}".messages WHERE queue = 'one-key') AS attempts`,
    )
    expect(row).toEqual({ claims: 4, attempts: 4 })
    // An ack does not free a rate slot (the limit counts claims, not work in flight).
    await t.postbox.ack(first)
    expect(await t.postbox.receive('one-key', { max: 20 })).toEqual([])
    await t.postbox.purgeQueue('one-key')
  })
})
