// A worker in its own process, for tests that kill, stop or freeze it. Configured by env:
//   DATABASE_URL, SCHEMA, QUEUE, CONCURRENCY (default 5), VISIBILITY_TIMEOUT (default 1s),
//   POLL_INTERVAL (default 200ms), HANDLER_MS (sleep in the handler, default 0), and HANDLER:
//   hang     starts, then never finishes
//   ok       sleeps HANDLER_MS and finishes
//   ledger   sleeps HANDLER_MS (or payload.sleepMs), then writes its effect: a row in
//            <schema>.ledger_handled (see ledger.ts). TRANSACTIONAL=1 runs work() in transactional
//            mode and writes the effect through ctx.tx; otherwise it commits on a pool of its own.
//            HANG_AFTER_EFFECT=1 hangs after writing the effect (before the ack), so a test can
//            kill the process there. payload.firstAttemptSleepMs sleeps that long on attempt 1 only. A payload { poison: 'throw' } always throws; { poison: 'crash' }
//            kills its own process with SIGKILL, as a segfault or the OOM killer would.
//   groups   records the handling's start and end in <schema>.group_ledger (see group-ledger.ts),
//            sleeping HANDLER_MS (or payload.sleepMs) in between.
//   span     records the handling's start and end in <schema>.span_ledger (see flow-ledger.ts),
//            sleeping HANDLER_MS (or payload.sleepMs) in between; { failFirst: true } throws on
//            attempt 1. PREFETCH sets work()'s prefetch.
// Prints one JSON line per event on stdout: {"event":"ready"}, {"event":"started","id":..,"attempt":..},
// {"event":"effect","id":..}, {"event":"leaseLost","id":..}, {"event":"listening"}, ...
import pg from 'pg'
import { Postbox } from '../../src/index.js'
import { recordSpan } from './flow-ledger.js'
import { recordHandling } from './group-ledger.js'

const env = process.env
const schema = env.SCHEMA as string
const postbox = new Postbox({
  connectionString: env.DATABASE_URL as string,
  schema,
  pollInterval: env.POLL_INTERVAL ?? '200ms',
})
const say = (event: string, fields: Record<string, unknown> = {}) => process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`)
const mode = env.HANDLER ?? 'ok'
const transactional = env.TRANSACTIONAL === '1'
const concurrency = Number(env.CONCURRENCY ?? 5)
// Lease mode writes its effect on a pool of its own: the handler's own commit, before the ack.
const effects = (mode === 'ledger' || mode === 'groups' || mode === 'span') && !transactional ? new pg.Pool({ connectionString: env.DATABASE_URL, max: concurrency }) : undefined
effects?.on('error', () => {}) // tests terminate backends on purpose
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

interface LedgerPayload {
  sleepMs?: number
  /** Sleep this long on the first attempt only (instead of sleepMs). */
  firstAttemptSleepMs?: number
  poison?: 'throw' | 'crash'
  /** span mode: throw on the first attempt (the retry then succeeds). */
  failFirst?: boolean
}

const worker = postbox.work<unknown>(
  env.QUEUE as string,
  async (message, ctx) => {
    say('started', { id: message.id, attempt: message.attempt })
    if (mode === 'hang') await new Promise(() => {})
    const payload = (typeof message.payload === 'object' && message.payload !== null ? message.payload : {}) as LedgerPayload
    if (mode === 'span') {
      const finish = await recordSpan(effects as pg.Pool, schema, message.id)
      if (payload.failFirst && message.attempt === 1) {
        await finish()
        throw new Error(`fails on its first attempt: ${message.id}`)
      }
      await sleep(payload.sleepMs ?? Number(env.HANDLER_MS ?? 0))
      await finish()
      say('finished', { id: message.id })
      return
    }
    if (mode === 'groups') {
      const finish = await recordHandling(effects as pg.Pool, schema, message)
      await sleep(payload.sleepMs ?? Number(env.HANDLER_MS ?? 0))
      await finish()
      say('finished', { id: message.id })
      return
    }
    const firstAttempt = message.attempt === 1 ? payload.firstAttemptSleepMs : undefined
    await sleep(firstAttempt ?? payload.sleepMs ?? Number(env.HANDLER_MS ?? 0))
    if (mode === 'ledger') {
      if (payload.poison === 'throw') throw new Error(`poison message ${message.id}`)
      if (payload.poison === 'crash') {
        say('crashing', { id: message.id, attempt: message.attempt })
        process.kill(process.pid, 'SIGKILL')
        await new Promise(() => {})
      }
      const insert = `INSERT INTO "${schema}".ledger_handled (id, attempt, pid, transactional) VALUES ($1, $2, $3, $4)`
      const values = [message.id, message.attempt, process.pid, transactional]
      await (transactional ? (ctx.tx as pg.PoolClient).query(insert, values) : (effects as pg.Pool).query(insert, values))
      say('effect', { id: message.id, attempt: message.attempt })
      if (env.HANG_AFTER_EFFECT === '1') await new Promise(() => {})
    }
    say('finished', { id: message.id })
  },
  { concurrency, visibilityTimeout: env.VISIBILITY_TIMEOUT ?? '1s', transactional, ...(env.PREFETCH ? { prefetch: Number(env.PREFETCH) } : {}) },
)
// Registered before anything is awaited, so a SIGTERM can never meet Node's default (exit at once).
process.on('SIGTERM', () => {
  void worker
    .stop({ timeout: 1000 })
    .then(() => postbox.close())
    .then(() => effects?.end())
    .then(() => say('stopped'))
})
worker.on('completed', (m) => say('completed', { id: m.id, attempt: m.attempt }))
worker.on('leaseLost', (m) => say('leaseLost', { id: m.id, attempt: m.attempt }))
worker.on('retried', (m) => say('retried', { id: m.id, attempt: m.attempt }))
worker.on('deadLettered', (m) => say('deadLettered', { id: m.id, attempt: m.attempt }))
worker.on('error', (error) => say('error', { message: String(error) }))
postbox.on('notifierConnected', () => say('listening'))
postbox.on('notifierLost', (error) => say('notifierLost', { message: String(error) }))
await postbox.listen()
say('ready')
