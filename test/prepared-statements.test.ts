import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { preparedName, preparingExecutor } from '../src/db/prepared-statements.js'
import { useTestSchema } from './support/test-schema.js'

// Named statements behind a pooler that cannot keep them (PgBouncer before 1.21 in transaction
// mode) fail with 42P05 or 26000. These tests make the server answer exactly that on one real
// connection: .ci/run also runs a named part of the suite through the Debian PgBouncer 1.18.
const t = useTestSchema()
// One connection, so that what it holds can be read back. A pg Client, since pg's Pool discards
// a connection whose statement failed.
const connection = new pg.Client({ connectionString: t.url })
beforeAll(() => connection.connect())
afterAll(() => connection.end())

const TEXT = 'SELECT $1::int + 1 AS n'
const preparedOnServer = async (on: pg.Client | pg.Pool = connection) =>
  (await on.query<{ name: string }>('SELECT name FROM pg_prepared_statements ORDER BY name')).rows.map((r) => r.name)

describe('named statements on the pool', () => {
  it('42P05: the statement runs again unnamed, and the pool names nothing from then on', async () => {
    const name = 'postbox:test:duplicate'
    // As when another client prepared the name on this server connection.
    await connection.query(`PREPARE "${preparedName(name, TEXT)}" AS SELECT 0`)
    const refusals: Error[] = []
    const db = preparingExecutor(connection, { onUnsupported: (e) => refusals.push(e) })
    expect((await db.query(TEXT, [1], name)).rows).toEqual([{ n: 2 }])
    expect((await db.query(TEXT, [2], name)).rows).toEqual([{ n: 3 }])
    expect(refusals.map((e) => (e as Error & { code?: string }).code)).toEqual(['42P05'])
    expect(await preparedOnServer()).toEqual([preparedName(name, TEXT)]) // only the one it met
    await connection.query('DEALLOCATE ALL')
  })

  it('26000: a statement the server connection does not hold runs again unnamed', async () => {
    const name = 'postbox:test:missing'
    const refusals: Error[] = []
    const db = preparingExecutor(connection, { onUnsupported: (e) => refusals.push(e) })
    expect((await db.query(TEXT, [1], name)).rows).toEqual([{ n: 2 }])
    expect(await preparedOnServer()).toEqual([preparedName(name, TEXT)]) // named while it works
    // As when the client lands on another server connection: pg believes it is prepared, the server does not.
    await connection.query('DEALLOCATE ALL')
    expect((await db.query(TEXT, [5], name)).rows).toEqual([{ n: 6 }])
    expect(refusals.map((e) => (e as Error & { code?: string }).code)).toEqual(['26000'])
    expect(await db.query(TEXT, [6], name)).toEqual({ rows: [{ n: 7 }] })
    expect(await preparedOnServer()).toEqual([])
  })

  it('other errors are thrown as they are, and do not stop the naming', async () => {
    const name = 'postbox:test:other'
    const refusals: Error[] = []
    const db = preparingExecutor(connection, { onUnsupported: (e) => refusals.push(e) })
    await expect(db.query('SELECT 1 / $1::int AS n', [0], name)).rejects.toMatchObject({ code: '22012' })
    expect(refusals).toEqual([])
    expect((await db.query('SELECT 1 / $1::int AS n', [1], name)).rows).toEqual([{ n: 1 }])
    expect(await preparedOnServer()).toContain(preparedName(name, 'SELECT 1 / $1::int AS n'))
    await connection.query('DEALLOCATE ALL')
  })
})

describe('prepared names', () => {
  it('stay within the 63 bytes Postgres keeps, and distinct, with the longest schema name', async () => {
    const schema = `s${'x'.repeat(62)}`
    const names = ['send_batch', 'send_message', 'ack_and_claim'].map((n) => preparedName(`postbox:${schema}:${n}`, TEXT))
    expect(names.every((n) => Buffer.byteLength(n) <= 63)).toBe(true)
    expect(new Set(names).size).toBe(3)
    // Prepared on a real connection, each keeps its whole name: nothing was cut, nothing collides.
    const db = preparingExecutor(connection)
    for (const n of ['send_batch', 'send_message', 'ack_and_claim']) await db.query(TEXT, [1], `postbox:${schema}:${n}`)
    expect((await preparedOnServer()).sort()).toEqual([...names].sort())
    await connection.query('DEALLOCATE ALL')
    expect(preparedName('postbox:jobs:send', TEXT)).toMatch(/^postbox:jobs:send:[0-9a-f]{12}$/) // short names stay readable
  })
})

describe('a Postbox', () => {
  it('prepares its hot statements on its own pool by default', async () => {
    const single = new pg.Pool({ connectionString: t.url, max: 1 })
    const postbox = t.newPostbox({ pool: single, connectionString: undefined, wakeups: 'poll' })
    try {
      await postbox.createQueue('named')
      await postbox.send('named', { one: 1 })
      expect((await preparedOnServer(single)).some((n) => n.startsWith(`postbox:${t.schema}:send:`))).toBe(true)
    } finally {
      await postbox.close()
      await single.end()
    }
  })

  it('never names a statement on the caller\'s connection, where a refusal would abort their transaction', async () => {
    await t.postbox.createQueue('in-tx')
    await t.postbox.send('in-tx', { zero: 0 })
    const [m] = await t.postbox.receive('in-tx', { max: 1 })
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      const before = (await client.query('SELECT count(*)::int AS n FROM pg_prepared_statements')).rows[0]
      await t.postbox.send('in-tx', { one: 1 }, { tx: client })
      await t.postbox.sendBatch('in-tx', [2, 3], { tx: client })
      await t.postbox.ack(m!, { tx: client })
      expect((await client.query('SELECT count(*)::int AS n FROM pg_prepared_statements')).rows[0]).toEqual(before)
      await client.query('COMMIT')
    } finally {
      client.release()
    }
  })
})
