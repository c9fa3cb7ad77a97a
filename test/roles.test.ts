import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { runRoles } from '../src/cli/roles.js'
import { poolDatabase } from '../src/db/database.js'
import { InvalidOptionsError, type Postbox } from '../src/index.js'
import { migrationFiles } from '../src/migrate/migration-files.js'
import { migrate } from '../src/migrate/migrator.js'
import { roleNames, rolesSql } from '../src/roles/roles-sql.js'
import { schemaName } from '../src/schema-name.js'
import { withSessionSettings } from './support/backends.js'
import { uniqueSchemaName, useTestSchema } from './support/test-schema.js'

// Least privilege, proven with the roles themselves: every connection below runs as one role
// (`-c role=...` on the connection, the same as SET ROLE for its whole life), through the
// TypeScript API and through plain SQL.
const t = useTestSchema()
const prefix = `r_${randomBytes(4).toString('hex')}`
const roles = roleNames(prefix)
const s = `"${t.schema}"`

const DENIED = '42501' // insufficient_privilege

/** Runs SQL as a role on a connection of its own; resolves with the rows or the pg error code. */
async function asRole(role: string, text: string, values: unknown[] = []): Promise<{ rows?: unknown[]; code?: string }> {
  const client = new pg.Client({ connectionString: withSessionSettings(t.url, { role }) })
  await client.connect()
  try {
    return { rows: (await client.query(text, values)).rows }
  } catch (error) {
    return { code: (error as { code?: string }).code ?? String(error) }
  } finally {
    await client.end()
  }
}

/** A Postbox whose every connection (pool and LISTEN) runs as the role. */
const postboxAs = (role: string): Postbox => t.newPostbox({ connectionString: withSessionSettings(t.url, { role }), pollInterval: '200ms' })

/** Everything the three roles are and hold in the schema, as sorted lines. */
async function privileges(): Promise<{ roles: string[]; tables: string[]; columns: string[]; functions: string[]; other: string[] }> {
  const names = Object.values(roles)
  const lines = async (text: string) => (await t.sql<{ line: string }>(text, [names, t.schema])).map((r) => r.line)
  return {
    roles: await lines(`SELECT format('%s login=%s super=%s inherit=%s', rolname, rolcanlogin, rolsuper, rolinherit) AS line
                        FROM pg_roles WHERE rolname = ANY ($1) AND $2::text IS NOT NULL ORDER BY 1`),
    tables: await lines(`SELECT format('%s %s %s', grantee, privilege_type, table_name) AS line FROM information_schema.role_table_grants
                         WHERE grantee = ANY ($1) AND table_schema = $2 ORDER BY 1`),
    columns: await lines(`SELECT format('%s %s %s.%s', grantee, privilege_type, table_name, column_name) AS line FROM information_schema.column_privileges
                          WHERE grantee = ANY ($1) AND table_schema = $2 ORDER BY 1`),
    functions: await lines(`SELECT format('%s %s %s', grantee, privilege_type, routine_name) AS line FROM information_schema.role_routine_grants
                            WHERE grantee = ANY ($1) AND routine_schema = $2 ORDER BY 1`),
    other: await lines(`SELECT format('%s %s %s', grantee, privilege_type, object_name) AS line FROM information_schema.usage_privileges
                        WHERE grantee = ANY ($1) AND object_schema = $2 ORDER BY 1`),
  }
}

const codeOf = (call: Promise<unknown>) => call.then(() => 'ok', (error: { code?: string }) => error.code ?? String(error))

beforeAll(async () => {
  await t.postbox.createQueue('jobs', { retention: '1h' })
  await t.postbox.createQueue('other')
  await t.sql(rolesSql(schemaName(t.schema), prefix))
})

afterAll(async () => {
  // Roles are cluster-wide: drop what they own or were granted here, then the roles.
  for (const role of Object.values(roles)) {
    await t.sql(`DROP OWNED BY "${role}"`).catch(() => {})
    await t.sql(`DROP ROLE IF EXISTS "${role}"`)
  }
})

describe('postbox roles: the SQL', () => {
  it('names three NOLOGIN roles after the prefix, and refuses a prefix that is not a plain identifier', async () => {
    expect(roles).toEqual({ producer: `${prefix}_producer`, consumer: `${prefix}_consumer`, admin: `${prefix}_admin` })
    const rows = await t.sql<{ rolname: string; rolcanlogin: boolean }>(
      `SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY ($1) ORDER BY rolname`, [Object.values(roles)])
    expect(rows).toEqual([roles.admin, roles.consumer, roles.producer].map((rolname) => ({ rolname, rolcanlogin: false })))
    for (const bad of ['Shop', 'a-b', 'x"; DROP ROLE postgres; --', '', 'pg_x', 'a'.repeat(55)]) {
      expect(() => roleNames(bad)).toThrow(InvalidOptionsError)
    }
    expect(rolesSql(schemaName('shop')).includes('"shop_producer"')).toBe(true) // the default prefix is the schema
  })

  it('is idempotent: applying it again changes nothing and fails nothing', async () => {
    const before = await privileges()
    await t.sql(rolesSql(schemaName(t.schema), prefix))
    await t.sql(rolesSql(schemaName(t.schema), prefix))
    const after = await privileges()
    expect(after).toEqual(before)
    // And it is a real picture: each role holds grants of every kind it should.
    for (const role of Object.values(roles)) {
      expect(before.tables.filter((g) => g.startsWith(`${role} `)), role).not.toEqual([])
      expect(before.functions.filter((g) => g.startsWith(`${role} `)), role).not.toEqual([])
    }
    expect(before.columns.filter((g) => g.startsWith(`${roles.producer} `))).toContain(`${roles.producer} INSERT messages.payload`)
    expect(before.roles).toHaveLength(3)
  })

  it('leaves nothing to PUBLIC, and every SECURITY DEFINER function (if any) pins its search_path', async () => {
    const [row] = await t.sql<{ public_functions: number; unpinned_definers: number; public_schema: boolean }>(
      `SELECT count(*) FILTER (WHERE has_function_privilege('public', p.oid, 'EXECUTE'))::int AS public_functions,
              count(*) FILTER (WHERE p.prosecdef AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%'))::int AS unpinned_definers,
              has_schema_privilege('public', $2, 'USAGE') AS public_schema
       FROM pg_proc p WHERE p.pronamespace = $1::regnamespace`, [s, t.schema])
    expect(row).toEqual({ public_functions: 0, unpinned_definers: 0, public_schema: false })
    // A role that was given none of them cannot even reach the schema.
    await t.sql(`DROP ROLE IF EXISTS "${prefix}_nobody"`)
    await t.sql(`CREATE ROLE "${prefix}_nobody" NOLOGIN`)
    try {
      expect(await asRole(`${prefix}_nobody`, `SELECT ${s}.send('jobs', '{}')`)).toEqual({ code: DENIED })
      expect(await asRole(`${prefix}_nobody`, `SELECT count(*) FROM ${s}.messages`)).toEqual({ code: DENIED })
    } finally {
      await t.sql(`DROP ROLE "${prefix}_nobody"`)
    }
  })

  it('postbox roles prints the script, and --apply runs it', async () => {
    const cli = ['--import', 'tsx', 'src/cli/main.ts', 'roles', '--schema', t.schema, '--prefix', prefix]
    const printed = await promisify(execFile)(process.execPath, cli)
    expect(printed.stdout).toBe(rolesSql(schemaName(t.schema), prefix))
    const said = vi.spyOn(console, 'log').mockImplementation(() => {})
    try {
      await runRoles({ databaseUrl: t.url, schema: t.schema, prefix, apply: true })
      expect(said).toHaveBeenCalledWith(expect.stringContaining(`roles ${roles.producer}, ${roles.consumer} and ${roles.admin} are in place`))
    } finally {
      said.mockRestore()
    }
  })
})

describe('producer', () => {
  it('sends (send, sendBatch, dedupe keys, the SQL send) and wakes a waiting consumer', async () => {
    const producer = postboxAs(roles.producer)
    try {
      // A consumer registered as waiting, so the send also marks it notified (wake()).
      await t.sql(`INSERT INTO ${s}.waiters (queue, listener, expires_at) VALUES ('jobs', 'someone', now() + interval '1 minute')`)
      const one = await producer.send('jobs', { n: 1 }, { headers: { trace: 'x' }, priority: 2 })
      const again = await producer.send('jobs', { n: 1 }, { dedupeKey: 'k1' })
      const dup = await producer.send('jobs', { n: 1 }, { dedupeKey: 'k1' })
      expect(dup).toEqual({ id: again.id, duplicate: true })
      expect(await producer.sendBatch<unknown>('jobs', ['a', Buffer.from([1]), { payload: 3, dedupeKey: 'k2' }])).toHaveLength(3)
      const client = new pg.Client({ connectionString: withSessionSettings(t.url, { role: roles.producer }) })
      await client.connect()
      try {
        await client.query('BEGIN')
        await producer.send('jobs', 'in my transaction', { tx: client })
        await client.query(`SELECT ${s}.send('jobs', '{"via":"sql"}')`)
        await client.query('COMMIT')
      } finally {
        await client.end()
      }
      const [row] = await t.sql<{ n: number; notified: boolean }>(
        `SELECT (SELECT count(*)::int FROM ${s}.messages WHERE queue = 'jobs') AS n,
                (SELECT notified FROM ${s}.waiters WHERE listener = 'someone') AS notified`)
      expect(row).toEqual({ n: 7, notified: true })
      expect(one.duplicate).toBe(false)
    } finally {
      await producer.close()
      await t.sql(`DELETE FROM ${s}.waiters WHERE listener = 'someone'`)
    }
  })

  it('sends to a queue with a dedupe window and fires schedules, but cannot make or delete one', async () => {
    await t.postbox.createQueue('windowed', { dedupeWindow: '5m' })
    await t.postbox.createQueue('ticks')
    await t.postbox.schedule('role-tick', { cron: '* * * * * *', queue: 'ticks' })
    const producer = postboxAs(roles.producer)
    try {
      const first = await producer.send('windowed', 1, { dedupeKey: 'w' })
      expect(await producer.sendBatch('windowed', [{ payload: 2, dedupeKey: 'w' }, { payload: 3, dedupeKey: 'v' }])).toEqual([first.id, expect.any(String)])
      const part = producer.startScheduler()
      await vi.waitFor(async () => expect((await t.sql(`SELECT 1 FROM ${s}.schedule_fires WHERE schedule = 'role-tick'`)).length).toBeGreaterThan(0), { timeout: 10_000, interval: 100 })
      await part.stop()
      expect(await codeOf(producer.schedule('mine', { cron: '@daily', queue: 'ticks' }))).toBe(DENIED)
      expect(await codeOf(producer.unschedule('role-tick'))).toBe(DENIED)
    } finally {
      await producer.close()
      await t.postbox.unschedule('role-tick')
    }
  })

  it('cannot read payloads, receive, ack, nack, extend, release, update or delete messages, or touch queues', async () => {
    const { id } = await t.postbox.send('jobs', { secret: 'payload' })
    const [lease] = await t.sql<{ lease: string }>(`SELECT gen_random_uuid()::text AS lease`)
    const p = roles.producer
    const denied: [string, string][] = [
      ['read a payload', `SELECT payload FROM ${s}.messages`],
      ['read every column', `SELECT * FROM ${s}.messages`],
      ['read headers', `SELECT headers, body FROM ${s}.messages`],
      ['read the archive', `SELECT * FROM ${s}.messages_archive`],
      ['read queue stats', `SELECT * FROM ${s}.queue_stats`],
      ['receive', `SELECT * FROM ${s}.receive('jobs', 10)`],
      ['ack', `SELECT ${s}.ack(ARRAY[${id}]::bigint[], ARRAY['${lease!.lease}']::uuid[])`],
      ['nack', `SELECT ${s}.nack(${id}, '${lease!.lease}')`],
      ['extend', `SELECT ${s}.extend(ARRAY[${id}]::bigint[], ARRAY['${lease!.lease}']::uuid[], '1 hour')`],
      ['release', `SELECT ${s}.release(ARRAY[${id}]::bigint[], ARRAY['${lease!.lease}']::uuid[])`],
      ['delete a message', `DELETE FROM ${s}.messages WHERE id = ${id}`],
      ['update a message', `UPDATE ${s}.messages SET available_at = now() WHERE id = ${id}`],
      ['truncate', `TRUNCATE ${s}.messages`],
      ['redrive', `SELECT ${s}.redrive('jobs.dead')`],
      ['create a queue', `INSERT INTO ${s}.queues (name) VALUES ('mine')`],
      ['create a queue with SQL', `SELECT ${s}.create_queue('mine')`],
      ['change a queue', `UPDATE ${s}.queues SET max_attempts = 1`],
      ['delete a queue', `DELETE FROM ${s}.queues WHERE name = 'jobs'`],
      ['read group leases', `SELECT * FROM ${s}.group_leases`],
      ['take a group lease', `INSERT INTO ${s}.group_leases VALUES ('jobs', 'g', 1, now())`],
      ['alter a table', `ALTER TABLE ${s}.queues ADD COLUMN x int`],
      ['create in the schema', `CREATE TABLE ${s}.mine (x int)`],
    ]
    for (const [what, text] of denied) expect({ what, ...(await asRole(p, text)) }).toEqual({ what, code: DENIED })
    const producer = postboxAs(p)
    try {
      expect(await codeOf(producer.receive('jobs'))).toBe(DENIED)
      expect(await codeOf(producer.ack({ id, lease: lease!.lease }))).toBe(DENIED)
      expect(await codeOf(producer.createQueue('mine'))).toBe(DENIED)
      expect(await codeOf(producer.deleteQueue('jobs', { purge: true }))).toBe(DENIED)
    } finally {
      await producer.close()
    }
    // Nothing changed: the message is still there, unleased.
    const [row] = await t.sql<{ lease: string | null }>(`SELECT lease FROM ${s}.messages WHERE id = $1`, [id])
    expect(row).toEqual({ lease: null })
  })
})

describe('consumer', () => {
  it('receives, acks, nacks, extends, releases, reads messages and stats, and runs a worker', async () => {
    await t.sql(`DELETE FROM ${s}.messages`)
    const ids = await t.postbox.sendBatch('jobs', [1, 2, 3, 4])
    const consumer = postboxAs(roles.consumer)
    try {
      const [a, b, c] = await consumer.receive('jobs', { max: 3, visibilityTimeout: '1m' })
      await consumer.extend(a!, '2m')
      await consumer.ack(a!) // into the archive: the queue keeps acked messages
      expect(await consumer.nack(b!, { delay: 0 })).toBe('retried')
      expect((await asRole(roles.consumer, `SELECT ${s}.release(ARRAY[${c!.id}]::bigint[], ARRAY['${c!.lease}']::uuid[])`)).rows).toHaveLength(1)
      expect((await asRole(roles.consumer, `SELECT id, payload FROM ${s}.messages WHERE queue = 'jobs'`)).rows).toHaveLength(3)
      expect((await consumer.stats('jobs'))[0]).toMatchObject({ queue: 'jobs', total: 3, retained: 1 })
      const handled: unknown[] = []
      const worker = consumer.work('jobs', (m) => void handled.push(m.payload), { concurrency: 3 })
      await consumer.listen()
      const deadline = Date.now() + 10_000
      while (handled.length < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
      await worker.stop()
      expect(handled.sort()).toEqual([2, 3, 4])
      expect(ids).toHaveLength(4)
      // Grouped messages: the claim takes group leases, extend moves them, ack and nack free them.
      await t.postbox.sendBatch('jobs', ['g1', 'g2', 'g3'].map((payload) => ({ payload, groupKey: 'g' })))
      const [g1] = await consumer.receive('jobs', { max: 10 })
      expect(g1!.payload).toBe('g1')
      await consumer.extend(g1!, '1m')
      await consumer.ack(g1!)
      const [g2] = await consumer.receive('jobs', { max: 10 })
      expect(await consumer.nack(g2!, { deadLetter: true })).toBe('dead')
      const [g3] = await consumer.receive('jobs', { max: 10 })
      expect(g3!.payload).toBe('g3')
      await consumer.ack(g3!)
    } finally {
      await consumer.close()
    }
  })

  it('claims from a queue with every limit: slots, the shards of its rate window, its keys', async () => {
    await t.postbox.createQueue('limited-jobs', { maxInFlight: 5, rateLimit: { limit: 3, per: '1h' }, keyRateLimit: { limit: 1, per: '1h' } })
    await t.postbox.sendBatch('limited-jobs', ['a', 'a', 'b', 'c', 'd'].map((key) => ({ payload: key, rateKey: key })))
    const consumer = postboxAs(roles.consumer)
    try {
      const claimed = await consumer.receive<string>('limited-jobs', { max: 5 })
      expect(claimed.map((m) => m.payload).sort()).toEqual(['a', 'b', 'c'])
      await consumer.ack(claimed)
      expect(await consumer.receive('limited-jobs', { max: 5 })).toEqual([])
    } finally {
      await consumer.close()
    }
  })

  it('keeps claiming after an upgrade that makes flow functions again (migration 0018), with roles applied before it', async () => {
    // A schema at migration 17, its roles applied, then migrated to the latest: 0018 makes
    // flow_gate, flow_take and rate_shards_make again, and whoever could execute them still can.
    const older = uniqueSchemaName()
    const db = poolDatabase(t.pool)
    const files = migrationFiles()
    try {
      await migrate(db, schemaName(older), files.slice(0, 17))
      await t.sql(rolesSql(schemaName(older), prefix))
      await migrate(db, schemaName(older))
      await t.sql(`SELECT "${older}".create_queue('keyed'); SELECT "${older}".set_flow_limits('keyed', key_rate_limit => 1000, key_rate_per => '1 hour');
                   SELECT "${older}".send('keyed', '{}', headers => '{"postbox-rate-key": "k"}')`)
      const claimed = await asRole(roles.consumer, `SELECT id FROM "${older}".claim('keyed', 5)`)
      expect(claimed).toEqual({ rows: [expect.objectContaining({ id: expect.any(String) })] })
    } finally {
      await t.sql(`DROP SCHEMA IF EXISTS "${older}" CASCADE`)
    }
  })

  it('cannot send, and cannot create, change or delete queues', async () => {
    const c = roles.consumer
    const denied: [string, string][] = [
      ['send with SQL', `SELECT ${s}.send('jobs', '{}')`],
      ['insert a message', `INSERT INTO ${s}.messages (queue, payload) VALUES ('jobs', '{}')`],
      ['create a queue', `INSERT INTO ${s}.queues (name) VALUES ('mine')`],
      ['create a queue with SQL', `SELECT ${s}.create_queue('mine')`],
      ['change a queue', `UPDATE ${s}.queues SET max_attempts = 1 WHERE name = 'jobs'`],
      ['delete a queue', `DELETE FROM ${s}.queues WHERE name = 'other'`],
      ['alter the table', `ALTER TABLE ${s}.queues ALTER COLUMN max_attempts SET DEFAULT 1`],
      ['drop the table', `DROP TABLE ${s}.queues`],
      ['redrive', `SELECT ${s}.redrive('jobs.dead')`],
      ['prune the archive', `SELECT ${s}.prune_archive()`],
    ]
    for (const [what, text] of denied) expect({ what, ...(await asRole(c, text)) }).toEqual({ what, code: DENIED })
    const consumer = postboxAs(c)
    try {
      expect(await codeOf(consumer.send('jobs', 1))).toBe(DENIED)
      expect(await codeOf(consumer.createQueue('mine'))).toBe(DENIED)
      expect(await codeOf(consumer.updateQueue('jobs', { maxAttempts: 1 }))).toBe(DENIED)
      expect(await codeOf(consumer.deleteQueue('other'))).toBe(DENIED)
    } finally {
      await consumer.close()
    }
    const [q] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM ${s}.queues WHERE name IN ('jobs', 'other')`)
    expect(q?.n).toBe(2)
  })
})

describe('streams', () => {
  it('admin creates a stream, the producer appends, a consumer group reads and commits; neither does the other\'s part', async () => {
    const admin = postboxAs(roles.admin)
    const producer = postboxAs(roles.producer)
    const consumer = postboxAs(roles.consumer)
    try {
      await admin.createStream('role-events', { partitions: 2 }) // makes the log's table: as the owner (0012)
      await producer.appendBatch('role-events', [1, 2, 3].map((n) => ({ payload: { n }, key: `k${n}` })))
      expect((await asRole(roles.producer, `SELECT ${s}.append('role-events', '{"n":4}')`)).rows).toHaveLength(1)
      expect(await asRole(roles.producer, `SELECT count(*) FROM ${s}.stream_events`)).toEqual({ code: DENIED })
      expect(await asRole(roles.producer, `SELECT ${s}.stamp_stream('role-events')`)).toEqual({ code: DENIED })
      expect(await asRole(roles.consumer, `SELECT ${s}.append('role-events', '{"n":5}')`)).toEqual({ code: DENIED })
      expect(await asRole(roles.consumer, `SELECT ${s}.create_stream('role-other')`)).toEqual({ code: DENIED })

      const seen: unknown[] = []
      const group = consumer.consume<{ n: number }>('role-events', 'role-group', (event) => void seen.push(event.payload.n))
      await vi.waitFor(() => expect(seen).toHaveLength(4), { timeout: 20_000, interval: 50 })
      await group.stop()
      expect(seen.sort()).toEqual([1, 2, 3, 4])
      const lag = (await consumer.streamStats('role-events')).filter((r) => r.group === 'role-group')
      expect(lag.map((r) => r.lag)).toEqual([0, 0]) // offsets committed as the consumer role
      expect(await admin.deleteStream('role-events')).toBe(true)
    } finally {
      await Promise.all([admin.close(), producer.close(), consumer.close()])
    }
  })
})

describe('admin', () => {
  it('manages queues and does everything an application does, but cannot rewrite the migration record', async () => {
    const admin = postboxAs(roles.admin)
    try {
      await admin.createQueue('admin-made', { maxAttempts: 2 })
      await admin.updateQueue('admin-made', { maxAttempts: 3 })
      await admin.send('admin-made', { x: 1 })
      const [m] = await admin.receive('admin-made')
      await admin.nack(m!, { deadLetter: true })
      expect(await admin.redrive('admin-made.dead')).toBe(1)
      await admin.pruneArchive()
      await admin.deleteQueue('admin-made', { purge: true })
      expect(await admin.getQueue('admin-made')).toBeNull()
    } finally {
      await admin.close()
    }
    expect((await asRole(roles.admin, `SELECT name, dead_letter FROM ${s}.create_queue('admin-sql', max_attempts => 2)`)).rows)
      .toEqual([{ name: 'admin-sql', dead_letter: 'admin-sql.dead' }])
    expect(await asRole(roles.admin, `DELETE FROM ${s}.schema_migrations`)).toEqual({ code: DENIED })
    expect(await asRole(roles.admin, `CREATE TABLE ${s}.mine (x int)`)).toEqual({ code: DENIED })
    expect((await asRole(roles.admin, `SELECT version FROM ${s}.schema_migrations`)).rows?.length).toBeGreaterThan(0)
  })
})
