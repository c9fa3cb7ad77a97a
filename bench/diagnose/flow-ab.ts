// npx tsx bench/diagnose/flow-ab.ts [rounds]
//   PATCH_SQL=<file>: SQL run after the migrations ({{schema}} replaced), e.g. a function's next version
// The flow bench's claim rounds alone (limitedClaimRounds: receive 100 + ack, 10 callers, the
// variants taking turns), more rounds than the bench's quick run, with the ratios to no limits:
// for trying a change to the limits' SQL before it becomes a migration.
import { readFileSync } from 'node:fs'
import { openBenchDb } from '../bench-db.js'
import { limitedClaimRounds } from '../flow-scenarios.js'

const rounds = Number(process.argv[2] ?? 5)
const db = await openBenchDb()
try {
  if (process.env.PATCH_SQL) await db.sql(readFileSync(process.env.PATCH_SQL, 'utf8').replaceAll('{{schema}}', db.schema).replaceAll('{{schema_name}}', db.schema))
  const rates = await limitedClaimRounds(db, 10_000, rounds)
  const baseline = rates.unlimited as number
  for (const [variant, rate] of Object.entries(rates)) {
    console.log(`${variant.padEnd(14)} ${Math.round(rate).toString().padStart(7)} msg/s  ${(rate / baseline).toFixed(2)}x`)
  }
} finally {
  await db.close()
}
