import { readdirSync, readFileSync } from 'node:fs'
import type { BenchDb } from './bench-db.js'

// CPU time per message, on both sides of the wire. On 2 shared cores wall-clock rates move by
// ±30% with whatever else runs; CPU time spent per message moves far less, so it says where the
// time goes: the Node process (process.cpuUsage) or the Postgres server (/proc of its postmaster
// and every child, including the children it has already reaped).

/** Clock ticks per second of /proc times (`getconf CLK_TCK`; 100 on every Linux we run). */
const TICKS_PER_S = 100

/** Where Postgres's CPU went: client backends, the background processes, or children that exited. */
export interface PostgresCpu {
  /** Every process of the server. */
  total: number
  /** Live client backends: the statements themselves. */
  backends: number
  /** Live background processes: checkpointer, WAL writer, background writer, autovacuum launcher. */
  background: number
  /** The postmaster itself and the children it reaped: autovacuum workers, closed connections. */
  exited: number
}

/** CPU microseconds used so far, by this process and by the server (undefined when not readable). */
export interface CpuReading {
  /** Node CPU when the reading began; `nodeUsEnd` when it ended (its own /proc reads lie between). */
  nodeUs: number
  nodeUsEnd?: number
  postgresUs: number | undefined
  postgres?: PostgresCpu
  /** Per live child of the postmaster: its CPU so far and whether it is a client backend. */
  children?: Map<number, { us: number; backend: boolean }>
}

/**
 * CPU used between two readings. A child that exited in between is known only through the
 * postmaster's reaped total: its time up to the first reading is taken off that, and the rest is
 * counted as `exited` (pools close idle connections; autovacuum workers come and go).
 */
export function cpuBetween(before: CpuReading, after: CpuReading): CpuReading {
  const nodeUs = after.nodeUs - (before.nodeUsEnd ?? before.nodeUs)
  const a = after.postgres
  const b = before.postgres
  if (!a || !b || !after.children || !before.children) {
    return { nodeUs, postgresUs: before.postgresUs === undefined || after.postgresUs === undefined ? undefined : after.postgresUs - before.postgresUs }
  }
  let backends = 0
  let background = 0
  for (const [pid, now] of after.children) {
    const delta = now.us - (before.children.get(pid)?.us ?? 0)
    if (now.backend) backends += delta
    else background += delta
  }
  let vanished = 0
  for (const [pid, was] of before.children) if (!after.children.has(pid)) vanished += was.us
  const exited = a.exited - b.exited - vanished
  const total = backends + background + exited
  return { nodeUs, postgresUs: total, postgres: { total, backends, background, exited } }
}

/** utime, stime, cutime, cstime and the parent pid from /proc/<pid>/stat (the fields after the command name). */
function stat(pid: number): { ppid: number; own: number; reaped: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ')
    // f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17.
    return { ppid: Number(f[1]), own: Number(f[11]) + Number(f[12]), reaped: Number(f[13]) + Number(f[14]) }
  } catch {
    return undefined
  }
}

/** Whether a child of the postmaster is a client backend, from its process title. */
function isBackend(pid: number): boolean {
  try {
    const title = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    return !/postgres: (checkpointer|background writer|walwriter|autovacuum|logical replication|io worker|startup|archiver|walsummarizer)/.test(title)
  } catch {
    return false
  }
}

/** The live children of the postmaster (for profilers to attach to, too). */
export function serverChildren(postmaster: number): number[] {
  try {
    // Cheap where the kernel has it: no walk over every process of a busy machine.
    return readFileSync(`/proc/${postmaster}/task/${postmaster}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number)
  } catch {
    const pids: number[] = []
    for (const entry of readdirSync('/proc')) {
      const pid = Number(entry)
      if (Number.isInteger(pid) && stat(pid)?.ppid === postmaster) pids.push(pid)
    }
    return pids
  }
}

/** The postmaster's pid of the server behind `db`, if it runs on this machine and we may read its data directory. */
export async function postmasterPid(db: BenchDb): Promise<number | undefined> {
  try {
    const [row] = await db.sql<{ dir: string }>('SELECT current_setting($1) AS dir', ['data_directory'])
    const pid = Number(readFileSync(`${row?.dir}/postmaster.pid`, 'utf8').split('\n')[0])
    return stat(pid) ? pid : undefined
  } catch {
    return undefined // not superuser, or not on this machine
  }
}

/**
 * Reads CPU time of this process and of the server behind `db`: the postmaster's own time, what
 * it reaped from children that exited, and every live child's time. The server is found through
 * its data directory's postmaster.pid, so this works for the embedded server and for a
 * DATABASE_URL on this machine, and reads undefined for a remote one.
 */
export async function cpuReader(db: BenchDb): Promise<() => CpuReading> {
  const postmaster = await postmasterPid(db)
  const toUs = (ticks: number) => (ticks / TICKS_PER_S) * 1e6
  const node = () => {
    const usage = process.cpuUsage()
    return usage.user + usage.system
  }
  return () => {
    const nodeUs = node()
    const root = postmaster === undefined ? undefined : stat(postmaster)
    if (postmaster === undefined || !root) return { nodeUs, postgresUs: undefined }
    const children = new Map<number, { us: number; backend: boolean }>()
    let backends = 0
    let background = 0
    for (const pid of serverChildren(postmaster)) {
      const us = toUs(stat(pid)?.own ?? 0)
      const backend = isBackend(pid)
      children.set(pid, { us, backend })
      if (backend) backends += us
      else background += us
    }
    const exited = toUs(root.own + root.reaped)
    return { nodeUs, nodeUsEnd: node(), postgresUs: backends + background + exited, postgres: { total: backends + background + exited, backends, background, exited }, children }
  }
}
