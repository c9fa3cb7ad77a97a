// Schedules (cron) and the dedupe window. A nightly report is scheduled in Paris time; a
// heartbeat every second is fired by the same process that handles it (any Postbox with a
// running worker takes part in scheduling, and each tick fires once however many do). Then a
// webhook queue with a five-minute dedupe window refuses a redelivered event after it was acked.
//
//   npx tsx examples/schedules.ts      (DATABASE_URL, or an embedded Postgres)
import assert from 'node:assert/strict'
import { Postbox, type Message } from '../src/index.js'
import { exampleDatabase } from './support/example-database.js'

const { connectionString, schema, close } = await exampleDatabase('schedules')
const postbox = new Postbox({ connectionString, schema })
try {
  await postbox.migrate()
  await postbox.createQueue('reports')
  await postbox.createQueue('heartbeats')

  // A report at 03:00 Paris time every night; after downtime, one catch-up run (the default).
  await postbox.schedule('nightly-report', { cron: '0 3 * * *', timezone: 'Europe/Paris', queue: 'reports', payload: { kind: 'daily' }, missed: 'latest' })
  // Six fields: the first is seconds. This one fires every second, and every tick missed while
  // nothing ran is fired later (missed: 'all').
  await postbox.schedule('heartbeat', { cron: '* * * * * *', queue: 'heartbeats', payload: { ping: true }, missed: 'all' })
  for (const s of await postbox.listSchedules()) {
    console.log(`${s.name}: '${s.cron}' in ${s.timezone}, next fire ${s.nextFireAt?.toISOString()}`)
  }

  // The worker's process fires the ticks; each message says which schedule and which tick.
  const beats: Message<{ ping: boolean }>[] = []
  let heard: () => void = () => {}
  const threeBeats = new Promise<void>((resolve) => (heard = resolve))
  const worker = postbox.work<{ ping: boolean }>('heartbeats', async (message) => {
    console.log(`${message.headers?.['postbox-schedule']} tick ${message.headers?.['postbox-fire-at']}`)
    beats.push(message)
    if (beats.length === 3) heard()
  })
  await threeBeats
  await worker.stop()
  await postbox.unschedule('heartbeat')
  const ticks = beats.map((m) => Date.parse(m.headers?.['postbox-fire-at'] as string))
  assert.deepEqual([ticks[1]! - ticks[0]!, ticks[2]! - ticks[1]!], [1000, 1000]) // one message per tick, none twice

  // A dedupe key stays refused for five minutes after its send, acked or not (SQS FIFO).
  await postbox.createQueue('webhooks', { dedupeWindow: '5m' })
  const first = await postbox.send('webhooks', { event: 'invoice.paid' }, { dedupeKey: 'evt_123' })
  const [delivery] = await postbox.receive('webhooks')
  await postbox.ack(delivery!)
  const again = await postbox.send('webhooks', { event: 'invoice.paid' }, { dedupeKey: 'evt_123' })
  console.log(`redelivered evt_123 after the ack: duplicate ${again.duplicate}, id ${again.id} (the first was ${first.id})`)
  assert.deepEqual(again, { id: first.id, duplicate: true })
} finally {
  await postbox.close()
  await close()
}
