import { describe, expect, it } from 'vitest'
import { startMember } from '../support/stream-members.js'
import { useTestSchema } from '../support/test-schema.js'
import { waitFor } from '../support/wait-for.js'

// SIGKILL a member of a consumer group while a producer appends: its partitions move to the
// other member within the session timeout, nothing is lost, and the events handled twice are at
// most those the dead member had handled and not committed (its batch in flight). In
// transactional mode nothing is handled twice at all.
const t = useTestSchema()

/** Appends keyed events every few milliseconds until stopped; returns the ids appended. */
function startAppending(stream: string): { stop(): Promise<string[]> } {
  const ids: string[] = []
  let running = true
  const loop = (async () => {
    for (let n = 0; running; n++) {
      const results = await t.postbox.appendBatch(stream, Array.from({ length: 5 }, (_, k) => ({ payload: { n, k }, key: `k${(n * 5 + k) % 17}` })))
      ids.push(...results.map((r) => r.id))
      await new Promise((resolve) => setTimeout(resolve, 40))
    }
  })()
  return { stop: async () => ((running = false), await loop, ids) }
}

async function run(transactional: boolean): Promise<void> {
  const stream = transactional ? 'kill-tx' : 'kill-inline'
  await t.postbox.createStream(stream, { partitions: 4 })
  const env = (member: string) => ({ DATABASE_URL: t.url, SCHEMA: t.schema, STREAM: stream, GROUP: 'g', MEMBER: member, HANDLER_MS: '10', TRANSACTIONAL: transactional ? '1' : '0' })
  const producer = startAppending(stream)
  const a = await startMember(env('a'))
  const b = await startMember(env('b'))
  try {
    await a.until((e) => e.filter((x) => x.event === 'effect').length >= 20)
    await waitFor('both members to own partitions', async () =>
      new Set((await t.postbox.streamStats(stream)).map((r) => r.owner).filter(Boolean)).size === 2, { timeoutMs: 30_000 })
    a.kill()
    await a.exited
    // What a had handled and not committed when it died: the only events that may be handled twice.
    const uncommitted = await t.sql<{ id: string }>(
      `SELECT s.id::text FROM "${t.schema}".stream_sink s
       JOIN "${t.schema}".stream_offsets o ON o.group_name = 'g' AND o.partition = s.partition
       JOIN "${t.schema}".streams st ON st.id = o.stream_id AND st.name = $1
       WHERE s.member = 'a' AND s."offset" > o.committed_offset
         AND s.id IN (SELECT e.id FROM "${t.schema}".stream_events e WHERE e.stream_id = st.id)`, [stream])
    const killedAt = Date.now()
    await waitFor('b to own all four partitions', async () =>
      (await t.postbox.streamStats(stream)).every((r) => r.owner === 'b'), { timeoutMs: 30_000 })
    const movedMs = Date.now() - killedAt
    const appended = await producer.stop()
    await waitFor('the group to catch up', async () => (await t.postbox.streamStats(stream)).every((r) => r.lag === 0), { timeoutMs: 60_000 })
    const sink = await t.sql<{ id: string; n: number }>(
      `SELECT id::text, count(*)::int AS n FROM "${t.schema}".stream_sink WHERE id = ANY ($1::bigint[]) GROUP BY id`, [appended])
    const handled = new Map(sink.map((r) => [r.id, r.n]))
    const lost = appended.filter((id) => !handled.has(id))
    const duplicates = sink.filter((r) => r.n > 1).map((r) => r.id)
    console.log(`stream member sigkill (${transactional ? 'transactional' : 'inline'}): ${JSON.stringify({ appended: appended.length, lost: lost.length, duplicates: duplicates.length, uncommittedAtKill: uncommitted.length, partitionsMovedMs: movedMs })}`)
    expect(appended.length).toBeGreaterThan(100)
    expect(lost).toEqual([])
    if (transactional) expect(duplicates).toEqual([]) // the dead member's uncommitted writes rolled back with its batch
    else expect(duplicates.every((id) => uncommitted.some((u) => u.id === id))).toBe(true)
    expect(movedMs).toBeLessThan(2_000 + 2_000) // the session timeout, plus a heartbeat and a loaded machine's slack
  } finally {
    await producer.stop()
    a.kill()
    b.kill()
    await Promise.all([a.exited, b.exited])
  }
}

describe('fault: SIGKILL of a stream group member', { timeout: 240_000 }, () => {
  it('at least once: its partitions move within the session timeout, nothing lost, duplicates only of its uncommitted batch', async () => {
    await t.sql(`CREATE TABLE "${t.schema}".stream_sink (partition int, "offset" bigint, id bigint, member text)`)
    await run(false)
  })

  it('transactional: nothing lost and nothing handled twice', async () => {
    await run(true)
  })
})
