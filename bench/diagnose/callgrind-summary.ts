// npx tsx bench/diagnose/callgrind-summary.ts <pids.json> <callgrind-dir>
//
// Instructions per message in Postgres for each variant of claim-sql.ts, counted by valgrind:
// deterministic, so unlike CPU time they do not move with whatever else runs on the machine.
// Start a server under callgrind (every backend writes its own file when it exits):
//
//   valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=DIR/callgrind.out.%p \
//     postgres -D DATA -p PORT -c synchronous_commit=off -c autovacuum=off
//   DATABASE_URL=… npx tsx bench/diagnose/claim-sql.ts --rounds 1 --count 3000 --connections 1 --pids-file pids.json
//   npx tsx bench/diagnose/callgrind-summary.ts pids.json DIR
//
// Prints, per variant, the backend's total and the inclusive cost of a few executor functions,
// in thousands of instructions per message (the backend's whole life: its first statements'
// compiling and planning included, spread over every message it handled).
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'

const [pidsFile, dir] = process.argv.slice(2)
if (!pidsFile || !dir) throw new Error('usage: callgrind-summary.ts <pids.json> <callgrind-dir>')
const { count, rounds, pids } = JSON.parse(readFileSync(pidsFile, 'utf8')) as { count: number; rounds: number; pids: Record<string, Record<string, number[]>> }
const messages = count * rounds

/** Executor functions whose inclusive cost is shown (a function inside another is counted in both). */
const FUNCTIONS = [
  'PostgresMain', 'plpgsql_call_handler', 'fmgr_sql', 'ExecLockRows', 'ExecUpdate', 'heap_update', 'ExecInsertIndexTuples',
  'ExecDelete', 'index_getnext_slot', 'ExecSort', 'ExecHashJoin', 'tuplestore_puttupleslot', 'ExecProject', 'printtup',
  'jsonb_out', 'array_in', 'uuid_in', 'XLogInsert', 'GetCachedPlan', 'standard_ExecutorStart',
]

const table = new Map<string, Map<string, number>>()
for (const [variant, byConnections] of Object.entries(pids)) {
  const costs = new Map<string, number>()
  for (const pid of Object.values(byConnections).flat()) {
    const file = `${dir}/callgrind.out.${pid}`
    if (!existsSync(file)) continue
    const out = execFileSync('callgrind_annotate', ['--inclusive=yes', '--threshold=100', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
    const seen = new Set<string>()
    for (const line of out.split('\n')) {
      const m = /^\s*([\d,]+)\s+\([\d. %]+\)\s+\S*?:(\w+)\s/.exec(line)
      if (!m || seen.has(m[2] as string) || !FUNCTIONS.includes(m[2] as string)) continue
      seen.add(m[2] as string)
      costs.set(m[2] as string, (costs.get(m[2] as string) ?? 0) + Number((m[1] as string).replaceAll(',', '')))
    }
  }
  table.set(variant, costs)
}
const variants = [...table.keys()]
console.log(`thousands of instructions per message in the backend (inclusive), ${messages} messages per variant`)
variants.forEach((v, i) => console.log(`  [${i + 1}] ${v}`))
console.log(`${'function'.padEnd(26)}${variants.map((_, i) => `[${i + 1}]`.padStart(9)).join('')}`)
for (const f of FUNCTIONS) console.log(`${f.padEnd(26)}${variants.map((v) => ((table.get(v)?.get(f) ?? 0) / messages / 1000).toFixed(1).padStart(9)).join('')}`)
