import { readdirSync, readFileSync } from 'node:fs'
import type { BenchDb } from './bench-db.js'

// CPU time per message, on both sides of the wire. On 2 shared cores wall-clock rates move by
// ±30% with whatever else runs; CPU time spent per message moves far less, so it says where the
// time goes: the Node process (process.cpuUsage) or the Postgres server (/proc of its postmaster
// and every child, including the children it has already reaped).

/** Clock ticks per second of /proc times (`getconf CLK_TCK`; 100 on every Linux we run). */
const TICKS_PER_S = 100

/** CPU microseconds used so far, by this process and by the server (undefined when not readable). */
export interface CpuReading {
  nodeUs: number
  postgresUs: number | undefined
}

/** CPU used between two readings. */
export function cpuBetween(before: CpuReading, after: CpuReading): CpuReading {
  return {
    nodeUs: after.nodeUs - before.nodeUs,
    postgresUs: before.postgresUs === undefined || after.postgresUs === undefined ? undefined : after.postgresUs - before.postgresUs,
  }
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

/**
 * Reads CPU time of this process and of the server behind `db`: the postmaster's own time, what
 * it reaped from children that exited, and every live child's time. The server is found through
 * its data directory's postmaster.pid, so this works for the embedded server and for a
 * DATABASE_URL on this machine, and reads undefined for a remote one.
 */
export async function cpuReader(db: BenchDb): Promise<() => CpuReading> {
  let postmaster: number | undefined
  try {
    const [row] = await db.sql<{ dir: string }>('SELECT current_setting($1) AS dir', ['data_directory'])
    postmaster = Number(readFileSync(`${row?.dir}/postmaster.pid`, 'utf8').split('\n')[0])
    if (!stat(postmaster)) postmaster = undefined
  } catch {
    postmaster = undefined // not superuser, or not on this machine
  }
  return () => {
    const usage = process.cpuUsage()
    const nodeUs = usage.user + usage.system
    if (postmaster === undefined) return { nodeUs, postgresUs: undefined }
    const root = stat(postmaster)
    if (!root) return { nodeUs, postgresUs: undefined }
    let ticks = root.own + root.reaped
    for (const entry of readdirSync('/proc')) {
      const pid = Number(entry)
      if (!Number.isInteger(pid)) continue
      const s = stat(pid)
      if (s?.ppid === postmaster) ticks += s.own
    }
    return { nodeUs, postgresUs: (ticks / TICKS_PER_S) * 1e6 }
  }
}
