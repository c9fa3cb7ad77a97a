// npx tsx bench/diagnose/flow-ab.ts [rounds]   (TAKE=<n>: messages a round, 10,000 as in the bench)
//   PATCH_SQL=<file>: SQL run after the migrations ({{schema}} and {{schema_name}} replaced), e.g. a
//   function's next version. PATCH_SQL_B=<file>: a second version, taking turns with the first
//   on the same server (each turn a warm-up and one counted round), for an A/B of two versions.
// The flow bench's claim rounds alone (limitedClaimRounds: receive 100 + ack, 10 callers, the
// variants taking turns), more rounds than the bench's quick run, with the ratios to no limits:
// for trying a change to the limits' SQL before it becomes a migration.
import { openBenchDb, type BenchDb } from '../bench-db.js'
import { limitedClaimRounds } from '../flow-scenarios.js'
import { sqlPatch } from './sql-patch.js'

const rounds = Number(process.argv[2] ?? 5)
const db = await openBenchDb()
const patch = (file: string) => db.sql(sqlPatch(file, db.schema))
const ratios = (rates: Record<string, number>) =>
  Object.fromEntries(Object.entries(rates).map(([variant, rate]) => [variant, rate / (rates.unlimited as number)]))
const median = (list: number[]) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)] as number

async function ab(a: string, b: string, db: BenchDb): Promise<void> {
  const turns: Record<string, Record<string, number>[]> = { A: [], B: [] }
  for (let round = 0; round < rounds; round++) {
    for (const [name, file] of [['A', a], ['B', b]] as const) {
      await patch(file)
      turns[name]!.push(ratios(await limitedClaimRounds(db, 10_000, 1)))
    }
  }
  for (const variant of Object.keys(turns.A![0]!).filter((v) => v !== 'unlimited')) {
    const show = (name: string) => `${name} ${median(turns[name]!.map((r) => r[variant] as number)).toFixed(2)}x [${turns[name]!.map((r) => (r[variant] as number).toFixed(2)).join(' ')}]`
    console.log(`${variant.padEnd(14)} ${show('A')}   ${show('B')}`)
  }
}

try {
  if (process.env.PATCH_SQL && process.env.PATCH_SQL_B) {
    await ab(process.env.PATCH_SQL, process.env.PATCH_SQL_B, db)
  } else {
    if (process.env.PATCH_SQL) await patch(process.env.PATCH_SQL)
    const rates = await limitedClaimRounds(db, Number(process.env.TAKE ?? 10_000), rounds)
    for (const [variant, ratio] of Object.entries(ratios(rates))) {
      console.log(`${variant.padEnd(14)} ${Math.round(rates[variant] as number).toString().padStart(7)} msg/s  ${ratio.toFixed(2)}x`)
    }
  }
} finally {
  await db.close()
}
