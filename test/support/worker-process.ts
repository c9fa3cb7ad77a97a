// A worker in its own process, for tests that kill, stop or freeze it. Configured by env:
// DATABASE_URL, SCHEMA, QUEUE, HANDLER (hang | ok), VISIBILITY_TIMEOUT. Prints one JSON line per
// event on stdout: {"event":"ready"}, {"event":"started","id":..,"attempt":..}, {"event":"leaseLost","id":..}, ...
import { Postbox } from '../../src/index.js'

const env = process.env
const postbox = new Postbox({ connectionString: env.DATABASE_URL as string, schema: env.SCHEMA as string, pollInterval: '200ms' })
const say = (event: string, fields: Record<string, unknown> = {}) => process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`)
const hang = env.HANDLER === 'hang'

const worker = postbox.work(
  env.QUEUE as string,
  async (message) => {
    say('started', { id: message.id, attempt: message.attempt })
    if (hang) await new Promise(() => {})
    await new Promise((resolve) => setTimeout(resolve, Number(env.HANDLER_MS ?? 0)))
    say('finished', { id: message.id })
  },
  { concurrency: Number(env.CONCURRENCY ?? 5), visibilityTimeout: env.VISIBILITY_TIMEOUT ?? '1s' },
)
worker.on('completed', (m) => say('completed', { id: m.id, attempt: m.attempt }))
worker.on('leaseLost', (m) => say('leaseLost', { id: m.id, attempt: m.attempt }))
worker.on('retried', (m) => say('retried', { id: m.id, attempt: m.attempt }))
worker.on('error', (error) => say('error', { message: String(error) }))
await postbox.listen()
say('ready')
process.on('SIGTERM', () => {
  void worker.stop({ timeout: 1000 }).then(() => postbox.close()).then(() => say('stopped'))
})
