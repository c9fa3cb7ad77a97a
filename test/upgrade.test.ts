import { afterAll, describe, expect, it } from 'vitest'
import { LeaseLostError, type Postbox } from '../src/index.js'
import { poolDatabase } from '../src/db/database.js'
import { migrationFiles } from '../src/migrate/migration-files.js'
import { migrate } from '../src/migrate/migrator.js'
import { schemaName } from '../src/schema-name.js'
import { uniqueSchemaName, useTestSchema } from './support/test-schema.js'

// Upgrades with messages in every state. For each older version (migrations 1..k, for every k
// below the latest, so a new migration file adds its own case here by itself), a schema is
// filled through the SQL API of 0001 (which every later version keeps): waiting, with a dedupe
// key, delayed, in flight under a lease of that version (a grouped head among them), waiting
// for a retry, dead, and archived. Then it is migrated to the latest version, and the latest
// client must find everything as it was: every row unchanged, the old leases still acking,
// extending and nacking, keys and groups still holding, dead letters redriving.

const t = useTestSchema({ migrate: false })
const files = migrationFiles()
const latest = files.length
const db = poolDatabase(t.pool)
const created: string[] = []

afterAll(async () => {
  for (const schema of created) await t.sql(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
})

interface Held {
  id: string
  lease: string
}

/** Fills a schema at an older version using only the SQL API of 0001. Returns the deliveries in flight. */
async function fill(schema: string): Promise<Record<string, Held>> {
  const S = `"${schema}"`
  const one = async <R>(text: string) => (await t.sql<R>(text))[0] as R
  const send = (state: string, options = '') => one<{ id: string }>(`SELECT ${S}.send('up', '{"state":"${state}"}'${options}) AS id`)
  const claim = (max: number, queue = 'up') => t.sql<Held>(`SELECT id::text, lease::text FROM ${S}.receive('${queue}', ${max}, '1 hour')`)
  await t.sql(`INSERT INTO ${S}.queues (name, dead_letter, visibility_timeout) VALUES ('up', 'up.dead', '1 hour'), ('up.dead', NULL, '1 hour')`)
  await t.sql(`INSERT INTO ${S}.queues (name, retention) VALUES ('kept', '1 day')`)
  // Waiting for a retry, and dead: claimed first (highest priority), then failed.
  await send('retry', ', priority => 20')
  const [retry] = await claim(1)
  await t.sql(`SELECT ${S}.nack(${retry!.id}, '${retry!.lease}', delay => '1 hour', error => 'boom')`)
  await send('dead', ', priority => 20')
  const [dead] = await claim(1)
  await t.sql(`SELECT ${S}.nack(${dead!.id}, '${dead!.lease}', error => 'fatal', dead => true)`)
  // Archived: acked in a queue that keeps acked messages.
  await one(`SELECT ${S}.send('kept', '{"state":"archived"}')`)
  const [kept] = await claim(1, 'kept')
  await t.sql(`SELECT ${S}.ack(ARRAY[${kept!.id}]::bigint[], ARRAY['${kept!.lease}']::uuid[])`)
  // In flight: the three messages of priority 10 (a group's head among them).
  await send('in flight 1', ', priority => 10')
  await send('in flight 2', ', priority => 10')
  await send('group head', `, priority => 10, group_key => 'g'`)
  await send('group next', `, group_key => 'g'`)
  const inFlight = await claim(3)
  expect(inFlight).toHaveLength(3)
  // Waiting and delayed.
  await send('waiting')
  await send('waiting with key', `, dedupe_key => 'once'`)
  await send('delayed', `, delay => '1 hour'`)
  const byState = await t.sql<{ id: string; state: string }>(`SELECT id::text, payload ->> 'state' AS state FROM ${S}.messages`)
  const state = new Map(byState.map((r) => [r.id, r.state]))
  return Object.fromEntries(inFlight.map((h) => [state.get(h.id) as string, h]))
}

/**
 * Every row of the schema's message tables, as text, to compare before and after: the columns the
 * older version has (a later migration may add columns; those are checked by their own tests).
 */
async function rows(schema: string, columns?: string[]): Promise<{ columns: string[]; messages: string[]; archive: string[] }> {
  const S = `"${schema}"`
  columns ??= (await t.sql<{ column_name: string }>(
    `SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'messages' ORDER BY ordinal_position`,
    [schema],
  )).map((c) => c.column_name)
  const list = columns.map((c) => `m.${c}`).join(', ')
  const messages = await t.sql<{ r: string }>(`SELECT (${list})::text AS r FROM ${S}.messages m ORDER BY id`)
  const archive = await t.sql<{ r: string }>(`SELECT (a.id, a.queue, a.payload, a.attempt)::text AS r FROM ${S}.messages_archive a ORDER BY id`)
  return { columns, messages: messages.map((x) => x.r), archive: archive.map((x) => x.r) }
}

const older = Array.from({ length: latest - 1 }, (_, i) => i + 1)

describe.each(older)('upgrade from version %i to the latest', (version) => {
  it('keeps every message as it was; old leases ack, extend and nack; keys, groups and dead letters hold', async () => {
    const schema = uniqueSchemaName(`up${version}`)
    created.push(schema)
    expect(await migrate(db, schemaName(schema), files.slice(0, version))).toMatchObject({ version })
    const held = await fill(schema)
    const before = await rows(schema)
    expect(before.messages).toHaveLength(9)
    expect(before.archive).toHaveLength(1)

    expect(await migrate(db, schemaName(schema))).toEqual({ applied: files.slice(version).map((f) => f.version), version: latest })
    expect(await rows(schema, before.columns)).toEqual(before) // the upgrade itself changes no message

    const postbox: Postbox = t.newPostbox({ schema })
    try {
      // Leases drawn before the upgrade still work.
      await postbox.ack(held['in flight 1']!)
      await postbox.extend(held['in flight 2']!, '1h')
      expect(await postbox.nack(held['in flight 2']!, { delay: 0 })).toBe('retried')
      await expect(postbox.ack(held['in flight 1']!)).rejects.toBeInstanceOf(LeaseLostError)
      // The group's head is still in flight: its next message waits.
      const ready = await postbox.receive<{ state: string }>('up', { max: 10 })
      expect(ready.map((m) => m.payload.state).sort()).toEqual(['in flight 2', 'waiting', 'waiting with key'])
      // Keys still deduplicate.
      expect(await postbox.send('up', { state: 'again' }, { dedupeKey: 'once' })).toMatchObject({ duplicate: true })
      await postbox.extend(held['group head']!, '1h')
      await postbox.ack([...ready, held['group head']!])
      const [next] = await postbox.receive<{ state: string }>('up', { max: 10 })
      expect(next!.payload.state).toBe('group next')
      await postbox.ack(next!)
      // What waits for later waits: the delayed one and the retry (with its error).
      const [stats] = await postbox.stats('up')
      expect(stats).toMatchObject({ ready: 0, delayed: 2, inFlight: 0, dead: 1 })
      const [retry] = await t.sql<{ last_error: string; attempt: number }>(
        `SELECT last_error, attempt FROM "${schema}".messages WHERE payload ->> 'state' = 'retry'`)
      expect(retry).toEqual({ last_error: 'boom', attempt: 1 })
      // The dead letter goes back to work and is handled.
      expect(await postbox.redrive('up.dead')).toBe(1)
      const [redriven] = await postbox.receive<{ state: string }>('up', { max: 10 })
      expect(redriven).toMatchObject({ payload: { state: 'dead' }, attempt: 1 })
      await postbox.ack(redriven!)
      // The archive kept its row, and the queue that keeps one still does.
      await postbox.send('kept', { state: 'after' })
      await postbox.ack(await postbox.receive('kept'))
      const [archived] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".messages_archive`)
      expect(archived!.n).toBe(2)
    } finally {
      await postbox.close()
    }
  })
})

/** A new schema at migration `version` (dropped after the file): its name, and the name quoted for SQL. */
async function schemaAt(prefix: string, version: number): Promise<{ schema: string; S: string }> {
  const schema = uniqueSchemaName(prefix)
  created.push(schema)
  await migrate(db, schemaName(schema), files.slice(0, version))
  return { schema, S: `"${schema}"` }
}

// Flow control's state changed shape in 0014 (slots of several places, the queue's rate window in
// shards): what a queue held in flight and claimed in its window before stays counted after.
describe('upgrade of flow control from version 12', () => {
  it('keeps the messages in flight under the cap and the claims in the rate windows', async () => {
    const { schema, S } = await schemaAt('upflow', 12)
    await t.sql(`INSERT INTO ${S}.queues (name, visibility_timeout) VALUES ('capped', '1 hour')`)
    await t.sql(`SELECT ${S}.set_flow_limits('capped', max_in_flight => 2, rate_limit => 3, rate_per => '1 hour')`)
    await t.sql(`SELECT ${S}.send('capped', jsonb_build_object('n', g)) FROM generate_series(1, 6) g`)
    const held = await t.sql<Held>(`SELECT id::text, lease::text FROM ${S}.receive('capped', 6)`)
    expect(held).toHaveLength(2)
    await t.sql(`INSERT INTO ${S}.queues (name, visibility_timeout) VALUES ('keyed', '1 hour')`)
    await t.sql(`SELECT ${S}.set_flow_limits('keyed', key_rate_limit => 2, key_rate_per => '1 hour')`)
    await t.sql(`SELECT ${S}.send('keyed', jsonb_build_object('n', g), headers => '{"postbox-rate-key": "a"}') FROM generate_series(1, 6) g`)
    expect(await t.sql(`SELECT id FROM ${S}.receive('keyed', 6)`)).toHaveLength(2)

    await migrate(db, schemaName(schema))
    const postbox: Postbox = t.newPostbox({ schema })
    try {
      expect(await postbox.receive('capped', { max: 6 })).toEqual([]) // both places taken
      await postbox.ack(held[0]!)
      const [third] = await postbox.receive('capped', { max: 6 }) // one place, and one claim left in the window
      expect(third).toBeDefined()
      await postbox.ack([held[1]!, third!])
      expect(await postbox.receive('capped', { max: 6 })).toEqual([]) // places free, the window full
      expect(await postbox.receive('keyed', { max: 6 })).toEqual([]) // the key's window is full too
      await postbox.updateQueue('keyed', { keyRateLimit: { limit: 3, per: '1h' } }) // and stays counted when its limit changes
      expect(await postbox.receive('keyed', { max: 6 })).toHaveLength(1)
    } finally {
      await postbox.close()
    }
  })
})

// 0019 lists each claim's token once in a slot row (0014 to 0018 listed it beside each id): the
// rows made before are rewritten, and what they held in flight stays counted.
describe('upgrade of the slot rows from version 18', () => {
  it('keeps the messages in flight under the cap', async () => {
    const { schema, S } = await schemaAt('upslot', 18)
    await t.sql(`INSERT INTO ${S}.queues (name, visibility_timeout) VALUES ('capped', '1 hour')`)
    // 64 places in 32 rows of 2: one claim of 2 fills its connection's row, its token listed twice.
    await t.sql(`SELECT ${S}.set_flow_limits('capped', max_in_flight => 64)`)
    await t.sql(`SELECT ${S}.send('capped', jsonb_build_object('n', g)) FROM generate_series(1, 70) g`)
    const held = await t.sql<Held>(`SELECT id::text, lease::text FROM ${S}.receive('capped', 2)`)
    expect(held).toHaveLength(2)
    const slots = `SELECT sum(cardinality(message_ids))::int AS ids, sum(cardinality(leases))::int AS tokens FROM ${S}.flight_slots WHERE queue = 'capped'`
    expect((await t.sql(slots))[0]).toEqual({ ids: 2, tokens: 2 })

    await migrate(db, schemaName(schema))
    expect((await t.sql(slots))[0]).toEqual({ ids: 2, tokens: 1 })
    const postbox: Postbox = t.newPostbox({ schema })
    try {
      expect(await postbox.receive('capped', { max: 100, visibilityTimeout: '1h' })).toHaveLength(62) // the two still count
      expect(await postbox.receive('capped', { max: 100 })).toEqual([])
      await postbox.ack(held[1]!)
      expect(await postbox.receive('capped', { max: 100, visibilityTimeout: '1h' })).toHaveLength(1) // one place back
      expect(await postbox.receive('capped', { max: 100 })).toEqual([])
    } finally {
      await postbox.close()
    }
  })
})
