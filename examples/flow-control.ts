// Flow control: a scraping fleet that must be polite. The queue allows at most 2 fetches a
// second per site and 20 pages in flight across every worker and process, whatever the size of
// the fleet; an operator pauses it (sends are still accepted) and resumes it. The limits are
// enforced by the claim in the database, so they hold across processes too.
//
//   npx tsx examples/flow-control.ts         (DATABASE_URL, or an embedded Postgres)
import assert from 'node:assert/strict'
import { Postbox } from '../src/index.js'
import { exampleDatabase } from './support/example-database.js'

const { connectionString, schema, close } = await exampleDatabase('flow')
const postbox = new Postbox({ connectionString, schema })
try {
  await postbox.migrate()
  await postbox.createQueue('scrape', {
    maxInFlight: 20, // at most 20 leased at once, across every consumer
    keyRateLimit: { limit: 2, per: '1s' }, // at most 2 claims a second per rateKey
  })
  const urls = ['https://a.example/1', 'https://a.example/2', 'https://a.example/3', 'https://b.example/1']
  for (const url of urls) await postbox.send('scrape', { url }, { rateKey: new URL(url).host })

  // Four workers (in one process here; they could be in four): a.example still gets two fetches
  // a second, however many of them ask.
  const fetched: { url: string; at: Date }[] = []
  const fleet = Array.from({ length: 4 }, () =>
    postbox.work<{ url: string }>('scrape', async (message) => {
      fetched.push({ url: message.payload.url, at: message.claimedAt })
    }, { concurrency: 5 }),
  )
  while (fetched.length < urls.length) await new Promise((resolve) => setTimeout(resolve, 50))
  for (const worker of fleet) await worker.stop()
  const onA = fetched.filter((f) => f.url.includes('a.example')).map((f) => f.at.getTime()).sort((x, y) => x - y)
  console.log(`a.example fetched at +${onA.map((t) => t - (onA[0] as number)).join(' ms, +')} ms (database clock)`)
  assert.ok((onA[2] as number) - (onA[0] as number) >= 1000, 'the third fetch of a.example waited for the window')

  // Paused: sends are accepted, nothing is claimed until resume.
  await postbox.pauseQueue('scrape')
  await postbox.send('scrape', { url: 'https://c.example/1' }, { rateKey: 'c.example' })
  assert.deepEqual(await postbox.receive('scrape'), [])
  console.log(`paused: ${JSON.stringify((await postbox.stats('scrape'))[0])}`)
  await postbox.resumeQueue('scrape')
  const [message] = await postbox.receive('scrape')
  assert.equal(message?.headers['postbox-rate-key'], 'c.example')
  await postbox.ack(message!)
  console.log(`settings: ${JSON.stringify(await postbox.getQueue('scrape'), ['maxInFlight', 'rateLimit', 'keyRateLimit', 'limit', 'per', 'paused'])}`)
} finally {
  await postbox.close()
  await close()
}
