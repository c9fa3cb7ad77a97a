// npx tsx bench/publish.ts [--rounds 5] [--seconds 4]
// Only the publish figure of `npm run bench`: publish reaching 10 queues against sendBatch of 10
// to one queue, alternating rounds, and their WAL bytes and statements per delivered message.
// Uses DATABASE_URL, else an embedded Postgres.
import pg from 'pg'
import { parseArgs } from 'node:util'
import { Postbox } from '../src/index.js'
import { openBenchDb, POOL_SIZE } from './bench-db.js'
import { progress } from './measure.js'
import * as topics from './topic-scenarios.js'

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, seconds: { type: 'string', default: '4' } } })
const db = await openBenchDb()
try {
  progress(`publish bench on ${db.source}, pool ${POOL_SIZE}, concurrency 10`)
  await topics.bindTopicQueues(db.postbox)
  const rounds = await topics.publishRounds(db, Number(args.seconds) * 1000, Number(args.rounds))
  const ratios = rounds.all.map((r) => r.publish / r.sendBatch)
  console.log(`publish to 10 queues: median ${Math.round(rounds.publish)} msg/s; sendBatch of 10: median ${Math.round(rounds.sendBatch)} msg/s`)
  console.log(`ratio per round: ${ratios.map((r) => r.toFixed(2)).join(', ')}; ratio of medians ${(rounds.publish / rounds.sendBatch).toFixed(2)}x (target >= 0.7x)`)
  let statements = 0
  const countingPool = new pg.Pool({ connectionString: db.url, max: POOL_SIZE })
  const query = countingPool.query.bind(countingPool) as (...a: unknown[]) => unknown
  ;(countingPool as unknown as { query: (...a: unknown[]) => unknown }).query = (...a: unknown[]) => {
    statements++
    return query(...a)
  }
  const counted = new Postbox({ pool: countingPool, schema: db.schema })
  try {
    for (const [step, c] of Object.entries(await topics.publishCosts(db, { postbox: counted, statements: () => statements }))) {
      console.log(`${step}: ${c.walBytesPerMessage.toFixed(0)} WAL bytes and ${c.statementsPerMessage.toFixed(2)} statements per delivered message`)
    }
  } finally {
    await counted.close()
    await countingPool.end()
  }
} finally {
  await db.close()
}
