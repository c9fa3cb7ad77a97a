import { describe, expect, it } from 'vitest'
import { NonRetryableError } from '../src/index.js'
import { parsePrometheusText, sampleValue, type PrometheusFamily } from './support/prometheus-text.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'

const t = useTestSchema()
const parse = parsePrometheusText

function value(families: Map<string, PrometheusFamily>, name: string, labels: Record<string, string>): number | undefined {
  return sampleValue(families, name, labels)
}

describe('postbox.metrics()', () => {
  it('exports queue depth by state and the oldest ready age from queue_stats', async () => {
    await t.postbox.createQueue('m-depth', { maxAttempts: 1 })
    await t.postbox.sendBatch('m-depth', [1, 2, 3, { payload: 4, delay: '1h' }])
    const [claimed, dead] = await t.postbox.receive('m-depth', { max: 2 })
    await t.postbox.nack(dead!, { error: 'boom' })
    await t.sql(`UPDATE "${t.schema}".messages SET available_at = now() - interval '90 seconds' WHERE queue = 'm-depth' AND lease IS NULL AND available_at <= now()`)
    const m = parse(await t.postbox.metrics())
    expect(m.get('postbox_queue_messages')?.type).toBe('gauge')
    expect(value(m, 'postbox_queue_messages', { queue: 'm-depth', state: 'ready' })).toBe(1)
    expect(value(m, 'postbox_queue_messages', { queue: 'm-depth', state: 'delayed' })).toBe(1)
    expect(value(m, 'postbox_queue_messages', { queue: 'm-depth', state: 'in_flight' })).toBe(1)
    expect(value(m, 'postbox_queue_messages', { queue: 'm-depth', state: 'dead' })).toBe(1)
    expect(value(m, 'postbox_queue_messages', { queue: 'm-depth.dead', state: 'ready' })).toBe(1)
    const age = value(m, 'postbox_queue_oldest_ready_age_seconds', { queue: 'm-depth' }) as number
    expect(age).toBeGreaterThanOrEqual(90)
    expect(age).toBeLessThan(120)
    expect(value(m, 'postbox_queue_oldest_ready_age_seconds', { queue: 'm-depth.dead' })).toBeGreaterThanOrEqual(0)
    await t.postbox.ack(claimed!)
    // A deleted queue's series go away instead of keeping their last value.
    await t.postbox.deleteQueue('m-depth', { purge: true })
    const after = parse(await t.postbox.metrics())
    expect(value(after, 'postbox_queue_messages', { queue: 'm-depth', state: 'ready' })).toBeUndefined()
  })

  it('counts this process\'s sends, and its workers\' outcomes and handler durations', async () => {
    await t.postbox.createQueue('m-work', { maxAttempts: 2, backoff: { type: 'fixed', base: 0, max: 0, jitter: false } })
    await t.postbox.send('m-work', { kind: 'ok' })
    await t.postbox.sendBatch('m-work', [{ kind: 'ok' }, { kind: 'ok' }, { kind: 'flaky' }, { kind: 'poison' }, { kind: 'fatal' }])
    const seen = new Set<string>()
    const outcomes: string[] = []
    const worker = t.postbox.work<{ kind: string }>('m-work', async (m) => {
      if (m.payload.kind === 'flaky' && !seen.has(m.id)) {
        seen.add(m.id)
        throw new Error('first try fails')
      }
      if (m.payload.kind === 'poison') throw new Error('always fails')
      if (m.payload.kind === 'fatal') throw new NonRetryableError('never works')
    }, { concurrency: 3 })
    for (const e of ['completed', 'retried', 'deadLettered'] as const) worker.on(e, () => outcomes.push(e))
    try {
      // 3 ok + flaky (retried, then completed) + poison (retried, then dead) + fatal (dead at once)
      await waitFor('every outcome', () => outcomes.length === 8, { timeoutMs: 15_000 })
    } finally {
      await worker.stop()
    }
    const m = parse(await t.postbox.metrics())
    expect(m.get('postbox_messages_sent_total')?.type).toBe('counter')
    expect(value(m, 'postbox_messages_sent_total', { queue: 'm-work' })).toBe(6)
    expect(value(m, 'postbox_messages_processed_total', { queue: 'm-work', outcome: 'completed' })).toBe(4)
    expect(value(m, 'postbox_messages_processed_total', { queue: 'm-work', outcome: 'retried' })).toBe(2)
    expect(value(m, 'postbox_messages_processed_total', { queue: 'm-work', outcome: 'dead_lettered' })).toBe(2)
    expect(m.get('postbox_handler_duration_seconds')?.type).toBe('histogram')
    // Every handler run is timed: 4 completed + 4 failed (the parser checked +Inf equals the count).
    expect(value(m, 'postbox_handler_duration_seconds_count', { queue: 'm-work' })).toBe(8)
    expect(value(m, 'postbox_handler_duration_seconds_bucket', { queue: 'm-work', le: '+Inf' })).toBe(8)
    expect(value(m, 'postbox_handler_duration_seconds_sum', { queue: 'm-work' })).toBeGreaterThan(0)
    // Streams do not exist yet: the family is declared, with no series.
    expect(m.get('postbox_stream_lag')).toMatchObject({ type: 'gauge', samples: [] })
  })

  it('keeps each Postbox\'s counters apart, and skips the queue query with queueStats: false', async () => {
    await t.postbox.createQueue('m-apart')
    const other = t.newPostbox()
    try {
      await other.send('m-apart', 1)
      await other.send('m-apart', 2)
      await t.postbox.send('m-apart', 3)
      const mine = parse(await t.postbox.metrics({ queueStats: false }))
      const theirs = parse(await other.metrics())
      expect(value(mine, 'postbox_messages_sent_total', { queue: 'm-apart' })).toBe(1)
      expect(value(theirs, 'postbox_messages_sent_total', { queue: 'm-apart' })).toBe(2)
      expect(mine.get('postbox_queue_messages')?.samples).toEqual([])
      expect(value(theirs, 'postbox_queue_messages', { queue: 'm-apart', state: 'ready' })).toBe(3)
    } finally {
      await other.close()
    }
  })

  it('does not count a send that failed', async () => {
    await expect(t.postbox.send('m-missing', 1)).rejects.toThrow(/does not exist/)
    const m = parse(await t.postbox.metrics({ queueStats: false }))
    expect(value(m, 'postbox_messages_sent_total', { queue: 'm-missing' })).toBeUndefined()
  })
})

describe('the strict exposition parser', () => {
  it('refuses malformed text, so a broken exposition fails the tests above', () => {
    expect(() => parse('x{a="1" 3\n')).toThrow()
    expect(() => parse('# TYPE x counter\nx{a="1"} abc\n')).toThrow(/bad value/)
    expect(() => parse('y 1\n')).toThrow(/undeclared/)
    expect(() => parse('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\n')).toThrow(/cumulative/)
    expect(() => parse('# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_count 3\n')).toThrow(/equal _count/)
  })
})
