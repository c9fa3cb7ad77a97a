// DATABASE_URL=… npx tsx bench/diagnose/postgres-profile.ts [--rounds 3] [--only postbox,graphile-worker]
//
// Where Postgres spends its CPU during end-to-end drains: `perf record` attached to the server's
// postmaster (it follows the backends forked later) for the drain only, not the preload, then
// `perf report` by symbol. Run as root on the machine of a server whose binary has symbols
// (the embedded Postgres 18 has them). Each contender's samples go to its own file under
// /tmp/postbox-perf-<contender>.data; the summary prints the top symbols and the share of a few
// families (B-tree, heap, executor, plpgsql, jsonb, text comparison, WAL, locking).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { openBenchDb } from '../bench-db.js'
import type { Contender } from '../contender.js'
import { cpuReader } from '../cpu.js'
import { progress } from '../measure.js'
import { graphileWorker } from '../peers/graphile-worker.js'
import { pgBoss } from '../peers/pg-boss.js'
import { postboxContender } from '../postbox-scenarios.js'

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, only: { type: 'string' }, count: { type: 'string', default: '20000' } } })
const ROUNDS = Number(args.rounds)
const COUNT = Number(args.count)
const only = args.only?.split(',')

/** Symbol families whose share of the samples is printed, by a pattern on the symbol name. */
const FAMILIES: Record<string, RegExp> = {
  'B-tree (_bt*, bt*)': /^_?bt/,
  'heap access (heap_*, heapam_*, Heap*)': /^(heap|Heap|heapam)/,
  'text comparison (varstr*, strcoll*, texteq, bttext*)': /varstr|strcoll|texteq|bttext|text_cmp|__strcoll/,
  'jsonb (jsonb*, JsonbValue*)': /[Jj]sonb/,
  'plpgsql (exec_stmt*, plpgsql_*)': /plpgsql|exec_stmt|exec_eval/,
  'WAL (XLog*)': /XLog|xlog/,
  'locks (LWLock*, LockAcquire*, heap_lock*)': /LWLock|LockAcquire|LockRelease|lock_tuple|heap_lock/,
  'memory (AllocSet*, palloc, malloc)': /AllocSet|palloc|pfree|malloc|_int_free|MemoryContext/,
  'kernel': /^\[k\]|^0x|entry_SYSCALL|do_syscall|__x64|copy_user|tcp_|__sys|sock/,
}

/** Pids of the live children of `parent`, from /proc. */
function serverChildren(parent: number): number[] {
  const pids: number[] = []
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry)
    if (!Number.isInteger(pid)) continue
    try {
      const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
      if (Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[1]) === parent) pids.push(pid)
    } catch {
      // gone meanwhile
    }
  }
  return pids
}

const db = await openBenchDb()
const readCpu = await cpuReader(db)
const [dir] = await db.sql<{ dir: string }>('SELECT current_setting($1) AS dir', ['data_directory'])
const postmaster = Number(readFileSync(`${dir?.dir}/postmaster.pid`, 'utf8').split('\n')[0])
const contenders: Contender[] = [postboxContender(db, readCpu), await graphileWorker(db, readCpu), await pgBoss(db, readCpu)]
try {
  for (const c of contenders) {
    if (only && !only.includes(c.name)) continue
    const file = `/tmp/postbox-perf-${c.name}.data`
    let perf: ChildProcess | undefined
    let first = true
    execFileSync('rm', ['-f', file, ...Array.from({ length: ROUNDS }, (_, i) => `${file}.${i + 1}`)])
    const rates: number[] = []
    for (let round = 1; round <= ROUNDS; round++) {
      progress(`${c.name}: round ${round} of ${ROUNDS}`)
      const run = await c.endToEnd(COUNT, {
        before: async () => {
          // One perf session per round, appended by perf inject would need more tooling; instead
          // the first round's file is kept and later rounds go to numbered files merged below.
          // The postmaster and its children now: perf follows backends forked later, but not the
          // ones already there (a peer's pool connects during its preload).
          const pids = [postmaster, ...serverChildren(postmaster)].join(',')
          perf = spawn('perf', ['record', '-e', 'cpu-clock', '-F', '499', '-p', pids, '-o', first ? file : `${file}.${round}`], { stdio: 'ignore' })
          first = false
          await new Promise((resolve) => setTimeout(resolve, 300)) // perf attaches
        },
        after: async () => {
          perf?.kill('SIGINT')
          await new Promise((resolve) => perf?.once('exit', resolve))
        },
      })
      rates.push(run.rate)
      progress(`  ${Math.round(run.rate)} msg/s, Postgres ${run.postgresCpuUs?.toFixed(1)} µs/msg, Node ${run.nodeCpuUs.toFixed(1)} µs/msg`)
    }
    const files = [file, ...Array.from({ length: ROUNDS - 1 }, (_, i) => `${file}.${i + 2}`)]
    const counts = new Map<string, number>()
    let total = 0
    for (const f of files) {
      const text = execFileSync('perf', ['report', '-i', f, '--sort', 'sym', '-F', 'sample,sym', '--stdio', '--percent-limit', '0'], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] })
      for (const line of text.split('\n')) {
        const m = /^\s+(\d+)\s+\[(.)\]\s+(.+?)\s*$/.exec(line)
        if (!m) continue
        const symbol = m[2] === 'k' ? `[k] ${m[3]}` : (m[3] as string)
        counts.set(symbol, (counts.get(symbol) ?? 0) + Number(m[1]))
        total += Number(m[1])
      }
    }
    console.log(`\n=== ${c.name}: ${ROUNDS} drains of ${COUNT}, ${total} samples of Postgres CPU (rates ${rates.map((r) => Math.round(r)).join(', ')} msg/s)`)
    console.log('families (a symbol may fall in none):')
    for (const [family, pattern] of Object.entries(FAMILIES)) {
      let n = 0
      for (const [symbol, k] of counts) if (pattern.test(symbol.replace(/^\[k\] /, '')) || (family === 'kernel' && symbol.startsWith('[k]'))) n += k
      console.log(`  ${((n / total) * 100).toFixed(1).padStart(5)}%  ${family}`)
    }
    console.log('top symbols:')
    for (const [symbol, k] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, 45)) console.log(`  ${((k / total) * 100).toFixed(2).padStart(6)}%  ${symbol}`)
  }
} finally {
  for (const c of contenders) await c.close().catch(() => {})
  await db.close()
}
