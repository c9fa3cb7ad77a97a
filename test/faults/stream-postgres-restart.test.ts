import { describe, expect, it } from 'vitest'
import { Postbox } from '../../src/index.js'
import { readAtFault } from '../support/fault-bounds.js'
import { useCrashableServer } from '../support/crashable-server.js'
import { startMember, uncommittedEffects, type Member } from '../support/stream-members.js'
import { uniqueSchemaName } from '../support/test-schema.js'
import { waitFor } from '../support/wait-for.js'

// Restart Postgres in immediate mode (a crash: every backend killed, WAL replay on start) twice
// while appenders write to a stream, committed at once and in transactions (some rolled back),
// and two groups read it in member processes: `inline` (two members, at least once) and `tx`
// (one member, transactional). Nobody restarts the app. Afterwards every committed event was
// handled by both groups, no rolled-back one by either, and the duplicates stay within what can
// be repeated: handlings whose offset commit did not happen (counted at each crash in the
// database, and over the whole run from the members' own events), none in transactional mode.
// The same own server as postgres-restart.test.ts (synchronous_commit on), skipped without
// binaries of the suite's Postgres version except in CI.
const crash = await useCrashableServer('stream-postgres-restart.test.ts', 'fault: Postgres restarted under stream load')
const major = crash.major
const RESTARTS = 2
const STREAM = 'restart-stream'

const schema = uniqueSchemaName('srestart')

interface AppendStats {
  /** Ids whose append was seen to commit. */
  committed: string[]
  /** Ids appended in transactions rolled back on purpose. */
  rolledBack: string[]
  /** Appends or commits that failed (their outcome unknown: not counted either way). */
  failures: number
}

/**
 * Appends until stopped: four callers appending one event at a time without `tx` (they share
 * statements), and one caller appending three events per transaction, every fourth rolled back.
 */
function startAppenders(postbox: Postbox): { stop(): Promise<AppendStats> } {
  const stats: AppendStats = { committed: [], rolledBack: [], failures: 0 }
  let running = true
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
  const atOnce = async (caller: number) => {
    for (let n = 0; running; n++) {
      try {
        stats.committed.push((await postbox.append(STREAM, { caller, n }, { key: `k${(caller * 7 + n) % 13}` })).id)
      } catch {
        stats.failures++
      }
      await pause(10)
    }
  }
  const inTransactions = async () => {
    for (let n = 0; running; n++) {
      const client = await crash.pool.connect().catch(() => undefined)
      if (!client) {
        stats.failures++
        await pause(50)
        continue
      }
      const onError = () => {} // the server may go away between two statements
      client.on('error', onError)
      let broken: Error | undefined
      try {
        await client.query('BEGIN')
        const ids = (await postbox.appendBatch(STREAM, [1, 2, 3].map((k) => ({ payload: { tx: n, k }, key: `t${n % 5}` })), { tx: client })).map((r) => r.id)
        const rollback = n % 4 === 3
        await client.query(rollback ? 'ROLLBACK' : 'COMMIT')
        ;(rollback ? stats.rolledBack : stats.committed).push(...ids)
      } catch (error) {
        broken = error as Error
        stats.failures++
      } finally {
        client.off('error', onError)
        client.release(broken)
      }
      await pause(20)
    }
  }
  const loops = Promise.all([0, 1, 2, 3].map(atOnce).concat(inTransactions()))
  return { stop: async () => ((running = false), await loops, stats) }
}

/**
 * Runs a fault at a moment when the handled-but-uncommitted events are known exactly (sink and
 * offsets locked against every writer: effects and offset commits wait): the sink rows past their
 * group's committed offset, counted per group.
 */
async function uncommittedAtFault(fault: () => Promise<unknown>): Promise<Record<string, number>> {
  return readAtFault(crash.pool, [`"${schema}".stream_sink`, `"${schema}".stream_offsets`], async (client) => {
    const { rows } = await client.query<{ group_name: string; n: number }>(
      `SELECT o.group_name, count(*)::int AS n FROM "${schema}".stream_sink s
       JOIN "${schema}".stream_offsets o ON o.group_name = split_part(s.member, '-', 1) AND o.partition = s.partition
       WHERE s."offset" > o.committed_offset GROUP BY o.group_name`)
    return Object.fromEntries(rows.map((r) => [r.group_name, r.n]))
  }, fault)
}

/** What one group did with the appended events: lost, rolled-back ones seen, handled twice. */
async function groupReport(group: string, stats: AppendStats): Promise<{ handled: number; lost: number; unexpected: number; duplicates: number }> {
  const { rows } = await crash.pool.query<{ handled: number; lost: number; unexpected: number; duplicates: number }>(
    `WITH h AS (SELECT id, count(*) AS n FROM "${schema}".stream_sink WHERE split_part(member, '-', 1) = $1 GROUP BY id)
     SELECT (SELECT count(*)::int FROM h) AS handled,
            (SELECT count(*)::int FROM unnest($2::bigint[]) c(id) WHERE NOT EXISTS (SELECT 1 FROM h WHERE h.id = c.id)) AS lost,
            -- (An id both rolled back and committed was drawn twice: a sequence's advance made by a
            -- rolled-back transaction that a crash struck before anything flushed it is made again.)
            (SELECT count(*)::int FROM h WHERE h.id = ANY ($3::bigint[]) AND NOT h.id = ANY ($2::bigint[])) AS unexpected,
            (SELECT coalesce(sum(n - 1), 0)::int FROM h WHERE n > 1) AS duplicates`,
    [group, stats.committed, stats.rolledBack])
  return rows[0]!
}

const effects = (members: readonly Member[]) => members.reduce((sum, m) => sum + m.events.filter((e) => e.event === 'effect').length, 0)

describe.skipIf(!crash.available)(`fault: Postgres ${major} restarted in immediate mode under stream load`, { timeout: 150_000 }, () => {
  it('no committed event lost, no rolled-back one read, duplicates only of uncommitted handlings, none in transactional mode', async () => {
    const { server, pool } = crash
    expect(server.major).toBe(major)
    const postbox = new Postbox({ connectionString: server.connectionString, schema, poolSize: 4 })
    await postbox.migrate()
    await postbox.createStream(STREAM, { partitions: 4 })
    await pool.query(`CREATE TABLE "${schema}".stream_sink (partition int, "offset" bigint, id bigint, member text)`)
    const env = (group: string, member: string, transactional: boolean) => ({
      DATABASE_URL: server.connectionString, SCHEMA: schema, STREAM, GROUP: group, MEMBER: `${group}-${member}`,
      HANDLER_MS: '5', TRANSACTIONAL: transactional ? '1' : '0', SESSION_TIMEOUT: '5s',
    })
    const inline = await Promise.all([startMember(env('inline', 'a', false)), startMember(env('inline', 'b', false))])
    const tx = [await startMember(env('tx', 'a', true))]
    const members = [...inline, ...tx]
    const appenders = startAppenders(postbox)
    const atCrashes: Record<string, number>[] = []
    const recoveries: number[] = []
    try {
      for (let restart = 0; restart < RESTARTS; restart++) {
        const before = [effects(inline), effects(tx)]
        await waitFor('both groups handling before the restart', () => effects(inline) >= before[0]! + 100 && effects(tx) >= before[1]! + 50, { timeoutMs: 30_000 })
        const restartedAt = Date.now()
        atCrashes.push(await uncommittedAtFault(() => server.restart()))
        const after = [effects(inline), effects(tx)]
        // Appenders, members and their notifiers come back by themselves.
        await waitFor('both groups handling again', () => effects(inline) >= after[0]! + 60 && effects(tx) >= after[1]! + 30, { timeoutMs: 40_000 })
        recoveries.push(Date.now() - restartedAt)
      }
      const stats = await appenders.stop()
      await waitFor('both groups caught up', async () => {
        const lag = await postbox.streamStats(STREAM)
        return lag.filter((r) => r.group !== null).length === 8 && lag.every((r) => r.group === null || r.lag === 0)
      }, { timeoutMs: 60_000, intervalMs: 200 })
      for (const m of members) expect(m.events.length).toBeGreaterThan(0)
      for (const m of members) m.kill()
      await Promise.all(members.map((m) => m.exited))
      const inlineReport = await groupReport('inline', stats)
      const txReport = await groupReport('tx', stats)
      const uncommitted = uncommittedEffects(inline[0]!) + uncommittedEffects(inline[1]!)
      const { rows } = await pool.query<{ missing: number; logged: number }>(
        `SELECT (SELECT count(*)::int FROM unnest($1::bigint[]) c(id) WHERE NOT EXISTS (SELECT 1 FROM "${schema}".stream_events e WHERE e.id = c.id)) AS missing,
                (SELECT count(*)::int FROM "${schema}".stream_events WHERE id = ANY ($2::bigint[])) AS logged`,
        [stats.committed, stats.rolledBack])
      console.log(`postgres ${major} restart, streams: ${JSON.stringify({
        appended: { committed: stats.committed.length, rolledBack: stats.rolledBack.length, failures: stats.failures },
        inline: inlineReport, transactional: txReport, uncommittedAtCrashes: atCrashes, uncommittedEffects: uncommitted, recoveryMs: recoveries,
      })}`)

      expect(stats.committed.length).toBeGreaterThan(300)
      expect(stats.rolledBack.length).toBeGreaterThan(0)
      // Every append whose commit was seen is in the log, and no rolled-back one is.
      expect(rows[0]).toEqual({ missing: 0, logged: 0 })
      for (const report of [inlineReport, txReport]) expect(report).toMatchObject({ lost: 0, unexpected: 0 })
      // At least once: an event is handled again only if its first handling's offset commit did
      // not happen (those pending at a crash, or failed while connections came back).
      expect(inlineReport.duplicates).toBeLessThanOrEqual(uncommitted)
      // Transactional: the effect commits with the offset or not at all.
      expect(txReport.duplicates).toBe(0)
    } finally {
      await appenders.stop()
      for (const m of members) m.kill()
      await Promise.all(members.map((m) => m.exited))
      await postbox.close()
    }
  })
})
