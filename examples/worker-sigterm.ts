// A worker with graceful shutdown: on SIGTERM (what Kubernetes, systemd and `docker stop` send)
// or SIGINT it stops claiming, lets running handlers finish, gives back what is left, and closes.
// So that CI can run it, it sends itself SIGTERM once it has handled EXAMPLE_MESSAGES messages
// (default 20), or after EXAMPLE_TIMEOUT_MS (default 30000) with exit code 1.
//
//   npx tsx examples/worker-sigterm.ts      (DATABASE_URL, or an embedded Postgres)
import { setTimeout as sleep } from 'node:timers/promises'
import { Postbox } from '../src/index.js'
import { exampleDatabase } from './support/example-database.js'

const messages = Number(process.env.EXAMPLE_MESSAGES ?? 20)
const timeoutMs = Number(process.env.EXAMPLE_TIMEOUT_MS ?? 30_000)
const { connectionString, schema, close } = await exampleDatabase('worker_sigterm')

const postbox = new Postbox({ connectionString, schema })
await postbox.migrate()
await postbox.createQueue('thumbnails')
await postbox.sendBatch('thumbnails', Array.from({ length: messages }, (_, i) => ({ imageId: i + 1 })))

const worker = postbox.work<{ imageId: number }>('thumbnails', async (message, { signal }) => {
  await sleep(50, undefined, { signal }) // resize the image; honour `signal` in long work
  console.log(`thumbnail for image ${message.payload.imageId} done`)
}, { concurrency: 4 })

const terminated = new Promise<NodeJS.Signals>((resolve) => {
  process.once('SIGTERM', resolve)
  process.once('SIGINT', resolve)
})

// For CI: behave like an orchestrator and send SIGTERM once the work is done (or taking too long).
let handled = 0
worker.on('completed', () => {
  if (++handled === messages) process.kill(process.pid, 'SIGTERM')
})
const timer = setTimeout(() => {
  console.error(`timed out after ${timeoutMs} ms with ${handled} of ${messages} handled`)
  process.exitCode = 1
  process.kill(process.pid, 'SIGTERM')
}, timeoutMs)

const signal = await terminated
console.log(`${signal}: finishing in-flight work, then closing`)
await worker.stop({ timeout: '10s' }) // running handlers get 10s; the rest go back to the queue
await postbox.close()
clearTimeout(timer)
console.log(`stopped cleanly after ${handled} messages`)
await close()
