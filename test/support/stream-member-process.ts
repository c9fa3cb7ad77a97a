// A stream consumer (one member of a group) in its own process, for tests that kill it.
// Configured by env: DATABASE_URL, SCHEMA, STREAM, GROUP, MEMBER, HANDLER_MS (default 10),
// SESSION_TIMEOUT (default 2s), TRANSACTIONAL=1 (the effect is written through ctx.tx; otherwise
// on a pool of its own, before the offset commit). The effect is a row (partition, offset, id,
// member) in <schema>.stream_sink. Prints one JSON line per event: {"event":"ready"},
// {"event":"assigned","partitions":[..]}, {"event":"effect","id":..,"partition":..,"offset":..},
// {"event":"committed","partition":..,"offset":..,"events":..}, {"event":"revoked","partitions":[..]},
// {"event":"fenced","partition":..}.
import pg from 'pg'
import { Postbox } from '../../src/index.js'

const env = process.env
const schema = env.SCHEMA as string
const member = env.MEMBER as string
const transactional = env.TRANSACTIONAL === '1'
const postbox = new Postbox({ connectionString: env.DATABASE_URL as string, schema, pollInterval: '200ms' })
const effects = transactional ? undefined : new pg.Pool({ connectionString: env.DATABASE_URL, max: 4 })
effects?.on('error', () => {})
const say = (event: string, fields: Record<string, unknown> = {}) => process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const INSERT = `INSERT INTO "${schema}".stream_sink (partition, "offset", id, member) VALUES ($1, $2, $3, $4)`

const consumer = postbox.consume(env.STREAM as string, env.GROUP as string, async (event, ctx) => {
  await sleep(Number(env.HANDLER_MS ?? 10))
  const values = [event.partition, event.offset, event.id, member]
  if (transactional) await ctx.tx!.query(INSERT, values)
  else await (effects as pg.Pool).query(INSERT, values)
  say('effect', { id: event.id, partition: event.partition, offset: event.offset })
}, {
  transactional,
  batchSize: 10,
  sessionTimeout: env.SESSION_TIMEOUT ?? '2s',
  heartbeatInterval: '300ms',
  pollInterval: '200ms',
  memberId: member,
})
consumer.on('assigned', (partitions) => say('assigned', { partitions }))
consumer.on('committed', (info) => say('committed', info))
consumer.on('revoked', (partitions) => say('revoked', { partitions }))
consumer.on('fenced', (partition) => say('fenced', { partition }))
consumer.on('error', (error) => say('error', { message: (error as Error).message }))
await consumer.ready()
say('ready')
process.once('SIGTERM', () => {
  void consumer.stop().then(() => postbox.close()).then(() => effects?.end()).then(() => process.exit(0))
})
