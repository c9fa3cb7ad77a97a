// npx tsx bench/publish.ts [--rounds 5] [--seconds 4]
// Only the publish figure of `npm run bench`: publish reaching 10 queues against sendBatch of 10
// to one queue, alternating rounds, and their WAL bytes and statements per delivered message.
// Uses DATABASE_URL, else an embedded Postgres.
import { parseArgs } from 'node:util'
import { countingPostbox, openBenchDb, POOL_SIZE } from './bench-db.js'
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
  const counted = countingPostbox(db)
  try {
    for (const [step, c] of Object.entries(await topics.publishCosts(db, counted))) {
      console.log(`${step}: ${c.walBytesPerMessage.toFixed(0)} WAL bytes and ${c.statementsPerMessage.toFixed(2)} statements per delivered message`)
    }
  } finally {
    await counted.close()
  }
} finally {
  await db.close()
}
