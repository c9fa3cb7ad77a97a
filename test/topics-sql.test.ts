import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { roleNames, rolesSql } from '../src/roles/roles-sql.js'
import { schemaName } from '../src/schema-name.js'
import { withSessionSettings } from './support/backends.js'
import { useTestSchema } from './support/test-schema.js'

// The SQL side of topics: publish from a trigger inside the business transaction, the bindings
// table and unrouted_stats view, a hostile search_path, and the least-privilege roles.
const t = useTestSchema()
const s = () => `"${t.schema}"`

beforeAll(async () => {
  for (const queue of ['inventory', 'shipping', 'audit']) await t.postbox.createQueue(queue)
  await t.postbox.bind('inventory', 'order.*.placed')
  await t.postbox.bind('shipping', 'order.*.placed', { filter: { delivery: 'ship' } })
  await t.postbox.bind('audit', 'order.#')
  await t.sql(`
    CREATE TABLE ${s()}.shop_orders (id int PRIMARY KEY, region text NOT NULL, delivery text NOT NULL);
    CREATE FUNCTION ${s()}.order_placed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM ${s()}.publish('order.' || NEW.region || '.placed', jsonb_build_object('order', NEW.id),
                             headers => jsonb_build_object('delivery', NEW.delivery), dedupe_key => 'order:' || NEW.id);
      RETURN NEW;
    END $$;
    CREATE TRIGGER order_placed AFTER INSERT ON ${s()}.shop_orders FOR EACH ROW EXECUTE FUNCTION ${s()}.order_placed();
  `)
})

async function copiesOf(order: number): Promise<string[]> {
  const rows = await t.sql<{ queue: string }>(`SELECT queue FROM ${s()}.messages WHERE payload->>'order' = $1 ORDER BY queue`, [String(order)])
  return rows.map((r) => r.queue)
}

describe('publish from SQL', () => {
  it('a trigger publishes inside the business transaction: rolled back -> no copy; committed -> every copy', async () => {
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      await client.query(`INSERT INTO ${s()}.shop_orders VALUES (1, 'eu', 'ship')`)
      await client.query('ROLLBACK')
      expect(await copiesOf(1)).toEqual([])
      await client.query('BEGIN')
      await client.query(`INSERT INTO ${s()}.shop_orders VALUES (2, 'eu', 'ship'), (3, 'us', 'pickup')`)
      expect(await copiesOf(2)).toEqual([]) // not before commit
      await client.query('COMMIT')
    } finally {
      client.release()
    }
    expect(await copiesOf(2)).toEqual(['audit', 'inventory', 'shipping'])
    expect(await copiesOf(3)).toEqual(['audit', 'inventory']) // the filter kept it from shipping
    const [m] = await t.postbox.receive('shipping')
    expect(m).toMatchObject({ payload: { order: 2 }, routingKey: 'order.eu.placed', headers: { delivery: 'ship' }, dedupeKey: 'order:2' })
    await t.postbox.ack(m!)
  })

  it('a failing publish fails the business write with it', async () => {
    await t.sql(`UPDATE ${s()}.queues SET max_payload_bytes = 10 WHERE name = 'audit'`)
    try {
      const code = await t.sql(`INSERT INTO ${s()}.shop_orders VALUES (4, 'eu', 'ship')`).then(() => 'ok', (e: { code: string }) => e.code)
      expect(code).toBe('PBP01')
      expect(await t.sql(`SELECT 1 FROM ${s()}.shop_orders WHERE id = 4`)).toEqual([])
      expect(await copiesOf(4)).toEqual([])
    } finally {
      await t.sql(`UPDATE ${s()}.queues SET max_payload_bytes = 262144 WHERE name = 'audit'`)
    }
  })

  it('returns how many queues it reached, takes the options as named arguments, and counts what it could not route', async () => {
    const [row] = await t.sql<{ n: number }>(
      `SELECT ${s()}.publish('order.us.placed', '{"order":10}', headers => '{"delivery":"ship"}', priority => 4,
         group_key => 'customer:7', delay => interval '1 hour') AS n`)
    expect(row?.n).toBe(3)
    expect(await t.sql(`SELECT DISTINCT priority, group_key, routing_key FROM ${s()}.messages WHERE payload->>'order' = '10'`))
      .toEqual([{ priority: 4, group_key: 'customer:7', routing_key: 'order.us.placed' }])
    const [before] = await t.sql<{ count: string }>(`SELECT count FROM ${s()}.unrouted_stats`)
    const [none] = await t.sql<{ n: number }>(`SELECT ${s()}.publish('invoice.paid', '{}') AS n`)
    expect(none?.n).toBe(0)
    expect(await t.sql(`SELECT count - $1::bigint AS added, last_routing_key FROM ${s()}.unrouted_stats`, [before?.count]))
      .toEqual([{ added: '1', last_routing_key: 'invoice.paid' }])
    const code = await t.sql(`SELECT ${s()}.publish('invoice.paid', '{}', unrouted => 'error')`).then(() => 'ok', (e: { code: string }) => e.code)
    expect(code).toBe('PBR04')
  })

  it('bindings and matching_queues are readable with plain SQL', async () => {
    expect(await t.sql(`SELECT queue, pattern, filter FROM ${s()}.bindings ORDER BY queue`)).toEqual([
      { queue: 'audit', pattern: 'order.#', filter: null },
      { queue: 'inventory', pattern: 'order.*.placed', filter: null },
      { queue: 'shipping', pattern: 'order.*.placed', filter: { delivery: 'ship' } },
    ])
    expect(await t.sql(`SELECT ${s()}.matching_queues('order.eu.placed', '{"delivery":"ship"}') AS q`)).toEqual([{ q: ['audit', 'inventory', 'shipping'] }])
    expect(await t.sql(`SELECT ${s()}.matching_queues('order') AS q`)).toEqual([{ q: ['audit'] }])
    expect(await t.sql(`SELECT ${s()}.matching_queues('invoice') AS q`)).toEqual([{ q: null }])
  })

  it('a hostile search_path cannot redirect publish', async () => {
    const evil = `${t.schema}_evil`
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      await client.query(`CREATE SCHEMA "${evil}"`)
      for (const table of ['messages', 'queues', 'waiters', 'bindings', 'unrouted_counts']) {
        await client.query(`CREATE TABLE "${evil}".${table} (LIKE ${s()}.${table} INCLUDING DEFAULTS)`)
      }
      await client.query(`CREATE FUNCTION "${evil}".wake(queue text) RETURNS void LANGUAGE sql AS 'SELECT NULL::void'`)
      await client.query(`CREATE FUNCTION "${evil}".deliver(text[]) RETURNS void LANGUAGE sql AS 'SELECT NULL::void'`)
      await client.query(`SET LOCAL search_path = "${evil}", pg_catalog`)
      const { rows } = await client.query(`SELECT ${s()}.publish('order.eu.placed', '{"order":20}', headers => '{"delivery":"ship"}') AS n`)
      expect(rows).toEqual([{ n: 3 }])
      expect((await client.query(`SELECT count(*)::int AS n FROM ${s()}.messages WHERE payload->>'order' = '20'`)).rows).toEqual([{ n: 3 }])
      expect((await client.query(`SELECT count(*)::int AS n FROM "${evil}".messages`)).rows).toEqual([{ n: 0 }])
    } finally {
      await client.query('ROLLBACK')
      client.release()
    }
  })
})

describe('roles', () => {
  const prefix = `rt_${randomBytes(4).toString('hex')}`
  const roles = roleNames(prefix)

  beforeAll(async () => {
    await t.sql(rolesSql(schemaName(t.schema), prefix))
  })

  afterAll(async () => {
    for (const role of Object.values(roles)) {
      await t.sql(`DROP OWNED BY "${role}"`).catch(() => {})
      await t.sql(`DROP ROLE IF EXISTS "${role}"`)
    }
  })

  const codeOf = (call: Promise<unknown>) => call.then(() => 'ok', (error: { code?: string }) => error.code ?? String(error))

  it('the producer publishes (TypeScript and SQL, routed, unroutable, deduplicated) but cannot bind or read payloads', async () => {
    const producer = t.newPostbox({ connectionString: withSessionSettings(t.url, { role: roles.producer }) })
    const client = new pg.Client({ connectionString: withSessionSettings(t.url, { role: roles.producer }) })
    await client.connect()
    try {
      // A consumer registered as waiting, so the publish also marks it notified (wake()).
      await t.sql(`INSERT INTO ${s()}.waiters (queue, listener, expires_at) VALUES ('inventory', 'someone', now() + interval '1 minute')`)
      expect((await producer.publish('order.eu.placed', { order: 30 }, { headers: { delivery: 'ship' } })).queues).toEqual(['audit', 'inventory', 'shipping'])
      expect((await producer.publish('order.eu.placed', { order: 31 }, { dedupeKey: 'k31' })).duplicates).toEqual([])
      expect((await producer.publish('order.eu.placed', { order: 31 }, { dedupeKey: 'k31' })).duplicates).toEqual(['audit', 'inventory'])
      expect(await producer.publishBatch([{ routingKey: 'order.x', payload: 32 }, { routingKey: 'nobody', payload: 33 }])).toHaveLength(2)
      expect((await producer.publish('still.nobody', 34)).queues).toEqual([])
      expect((await client.query(`SELECT ${s()}.publish('order.us.placed', '{"order":35}') AS n`)).rows).toEqual([{ n: 2 }])
      expect(await t.sql(`SELECT notified FROM ${s()}.waiters WHERE listener = 'someone'`)).toEqual([{ notified: true }])
      expect(await codeOf(producer.bind('audit', 'x.#'))).toBe('42501')
      expect(await codeOf(producer.unbind('audit', 'order.#'))).toBe('42501')
      expect(await codeOf(client.query(`INSERT INTO ${s()}.bindings (queue, pattern) VALUES ('audit', 'y')`))).toBe('42501')
      expect(await codeOf(client.query(`DELETE FROM ${s()}.bindings`))).toBe('42501')
      expect(await codeOf(client.query(`SELECT payload, routing_key FROM ${s()}.messages`))).toBe('42501')
    } finally {
      await t.sql(`DELETE FROM ${s()}.waiters WHERE listener = 'someone'`)
      await producer.close()
      await client.end()
    }
  })

  it('the consumer cannot publish or bind, and reads the routing key of what it receives', async () => {
    const consumer = t.newPostbox({ connectionString: withSessionSettings(t.url, { role: roles.consumer }) })
    try {
      expect(await codeOf(consumer.publish('order.eu.placed', 1))).toBe('42501')
      expect(await codeOf(consumer.bind('audit', 'x.#'))).toBe('42501')
      const [m] = await consumer.receive('audit')
      expect(m?.routingKey).toMatch(/^order\./)
      await consumer.ack(m!)
    } finally {
      await consumer.close()
    }
  })

  it('the admin binds, unbinds and reads the bindings and the unrouted count', async () => {
    const admin = t.newPostbox({ connectionString: withSessionSettings(t.url, { role: roles.admin }) })
    try {
      expect(await admin.bind('audit', 'invoice.#')).toBe(true)
      expect(await admin.listBindings({ queue: 'audit' })).toContainEqual({ queue: 'audit', pattern: 'invoice.#', filter: null })
      expect(await admin.unbind('audit', 'invoice.#')).toBe(true)
      expect((await admin.unroutedStats()).count).toBeGreaterThan(0)
    } finally {
      await admin.close()
    }
  })
})
