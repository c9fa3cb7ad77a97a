// The processes of the soak run (bench/soak.ts starts them): a producer or a consumer, chosen by
// SOAK_ROLE. Each prints one JSON line per event on stdout for the orchestrator.
//
// producer  SOAK_RATE messages a second in transactions of SOAK_BATCH, each transaction also
//           writing the ledger (so a ledger row exists iff the send committed); every tenth
//           transaction is rolled back on purpose. Rides out server restarts. On SIGTERM it
//           finishes its transaction and prints its totals.
// consumer  work() on SOAK_QUEUE, in transactional mode when SOAK_TRANSACTIONAL=1, writing one
//           ledger_handled row per handling (through ctx.tx in transactional mode).
import pg from 'pg'
import { Postbox } from '../src/index.js'

const env = process.env
const url = env.DATABASE_URL as string
const schema = env.SOAK_SCHEMA as string
const say = (event: string, fields: Record<string, unknown> = {}) => process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function producer(): Promise<void> {
  const queues = (env.SOAK_QUEUES as string).split(',')
  const rate = Number(env.SOAK_RATE)
  const batch = Number(env.SOAK_BATCH ?? 5)
  const postbox = new Postbox({ connectionString: url, schema, poolSize: 2, wakeups: 'poll' })
  const pool = new pg.Pool({ connectionString: url, max: 2 })
  pool.on('error', () => {})
  let running = true
  process.on('SIGTERM', () => (running = false))
  const totals = { committed: 0, rolledBack: 0, failures: 0 }
  const intervalMs = (1000 * batch) / rate
  let next = performance.now()
  for (let round = 0; running; round++) {
    const queue = queues[round % queues.length] as string
    const rollback = round % 10 === 9
    const client = await pool.connect().catch(() => undefined)
    if (client) {
      const onError = () => {}
      client.on('error', onError)
      let broken: Error | undefined
      try {
        await client.query('BEGIN')
        const payloads = Array.from({ length: batch }, (_, i) => ({ round, i, at: Date.now() }))
        const ids = await postbox.sendBatch(queue, payloads, { tx: client })
        await client.query(`INSERT INTO "${schema}".ledger_sent (id, queue) SELECT unnest($1::bigint[]), $2`, [ids, queue])
        await client.query(rollback ? 'ROLLBACK' : 'COMMIT')
        if (rollback) totals.rolledBack += ids.length
        else totals.committed += ids.length
      } catch (error) {
        broken = error as Error
        totals.failures++
        await client.query('ROLLBACK').catch(() => {})
      } finally {
        client.off('error', onError)
        client.release(broken)
      }
    } else {
      totals.failures++
    }
    next += intervalMs
    const wait = next - performance.now()
    if (wait > 0) await sleep(wait)
    else if (wait < -5_000) next = performance.now() // after an outage, do not burst to catch up
  }
  say('stats', totals)
  await postbox.close()
  await pool.end()
}

async function consumer(): Promise<void> {
  const transactional = env.SOAK_TRANSACTIONAL === '1'
  const concurrency = Number(env.SOAK_CONCURRENCY ?? 10)
  // A transactional handler holds a connection until it commits, and claims and renewals need 2 more.
  const postbox = new Postbox({ connectionString: url, schema, poolSize: transactional ? concurrency + 2 : 4, pollInterval: '1s' })
  const effects = transactional ? undefined : new pg.Pool({ connectionString: url, max: concurrency })
  effects?.on('error', () => {})
  const insert = `INSERT INTO "${schema}".ledger_handled (id, attempt, pid, transactional) VALUES ($1, $2, $3, $4)`
  const worker = postbox.work<unknown>(
    env.SOAK_QUEUE as string,
    async (message, ctx) => {
      say('started', { id: message.id })
      await sleep(Math.random() * 3)
      const values = [message.id, message.attempt, process.pid, transactional]
      await (transactional ? (ctx.tx as pg.PoolClient).query(insert, values) : (effects as pg.Pool).query(insert, values))
      say('done', { id: message.id })
    },
    { concurrency, transactional },
  )
  worker.on('error', () => say('workerError')) // claims failing while the server restarts; the worker retries
  postbox.on('notifierConnected', () => say('listening'))
  await postbox.listen()
  say('ready')
  process.on('SIGTERM', () => {
    void worker
      .stop({ timeout: 2_000 })
      .then(() => postbox.close())
      .then(() => effects?.end())
      .then(() => process.exit(0))
  })
}

await (env.SOAK_ROLE === 'producer' ? producer() : consumer())
