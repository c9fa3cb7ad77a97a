import { createServer } from 'node:net'
import { describe, expect, it, vi } from 'vitest'
import { runCli, startCli } from './support/built-cli.js'
import { useTestSchema } from './support/test-schema.js'

// The built binary (node dist/cli/main.js), run as a child process against the test Postgres.
// Each run starts a Node process (a second or two when the machine is busy), and some tests
// make several: a longer timeout than the suite's default.
vi.setConfig({ testTimeout: 120_000 })
const t = useTestSchema()
const conn = () => ['--url', t.url, '--schema', t.schema]
let queueNumber = 0
async function freshQueue(options: Parameters<typeof t.postbox.createQueue>[1] = {}): Promise<string> {
  const name = `c${++queueNumber}`
  await t.postbox.createQueue(name, options)
  return name
}

/** Messages of a queue as stored, to prove a command changed nothing (or exactly what it should). */
async function rows(queue: string) {
  return t.sql<{ id: string; attempt: number; lease: string | null; available_at: Date; claimed_at: Date | null }>(
    `SELECT id::text, attempt, lease, available_at, claimed_at FROM "${t.schema}".messages WHERE queue = $1 ORDER BY id`,
    [queue],
  )
}

/** Stderr must be one line, with no stack trace. */
function oneLine(stderr: string): string {
  const lines = stderr.trimEnd().split('\n')
  expect(lines, stderr).toHaveLength(1)
  expect(stderr).not.toMatch(/\n\s+at /)
  return lines[0] as string
}

describe('postbox queues / stats', () => {
  it('lists queues as a table and as JSON', async () => {
    const queue = await freshQueue({ maxAttempts: 3 })
    const table = await runCli(['queues', ...conn()])
    expect(table.code).toBe(0)
    expect(table.stdout).toMatch(new RegExp(`^ ${queue} +\\| 30s +\\| +3 \\| exponential 1s\\.\\.1h 00m jitter \\| ${queue}\\.dead`, 'm'))
    const json = await runCli(['queues', '--json', ...conn()])
    expect(JSON.parse(json.stdout)).toContainEqual(expect.objectContaining({ name: queue, maxAttempts: 3, deadLetter: `${queue}.dead` }))
  })

  it('prints counts of one queue, and fails with one line for an unknown queue', async () => {
    const queue = await freshQueue()
    await t.postbox.sendBatch(queue, [{ a: 1 }, { a: 2 }, { payload: { a: 3 }, delay: '1h' }])
    const table = await runCli(['stats', queue, ...conn()])
    expect(table.code).toBe(0)
    expect(table.stdout).toMatch(new RegExp(`^ ${queue} +\\| +2 \\| +1 \\| +0 \\| +0 \\|`, 'm'))
    const json = await runCli(['stats', queue, '--json', ...conn()])
    expect(JSON.parse(json.stdout)).toEqual([expect.objectContaining({ queue, ready: 2, delayed: 1, inFlight: 0, dead: 0 })])
    const unknown = await runCli(['stats', 'no-such-queue', ...conn()])
    expect(unknown.code).toBe(1)
    expect(oneLine(unknown.stderr)).toBe("postbox: queue 'no-such-queue' does not exist; create it with createQueue()")
  })

  it('--watch prints a reading per interval until Ctrl-C, then exits 0', async () => {
    const queue = await freshQueue()
    const cli = startCli(['stats', queue, '--watch', '--json', '--interval', '100ms', ...conn()])
    await cli.waitForOutput(/"ready":0/)
    await t.postbox.send(queue, { n: 1 })
    await cli.waitForOutput(/"ready":1/)
    expect(await cli.stop('SIGINT')).toBe(0)
    const readings = cli.stdout().trim().split('\n').map((line) => JSON.parse(line))
    expect(readings.length).toBeGreaterThanOrEqual(2)
    expect(readings.at(-1).queues).toEqual([expect.objectContaining({ queue, ready: 1 })])
  })
})

describe('postbox bindings', () => {
  it('lists bindings as a table and as JSON, with the unrouted count, and refuses an unknown queue', async () => {
    const queue = await freshQueue()
    await t.postbox.bind(queue, 'invoice.#', { filter: { tier: 'gold' } })
    const table = await runCli(['bindings', queue, ...conn()])
    expect(table.code).toBe(0)
    expect(table.stdout).toMatch(new RegExp(`^ ${queue} +\\| invoice\\.# +\\| \\{"tier":"gold"\\}`, 'm'))
    expect(table.stdout).toMatch(/^unrouted publishes: \d+/m)
    const json = await runCli(['bindings', '--json', ...conn()])
    expect(JSON.parse(json.stdout).bindings).toContainEqual({ queue, pattern: 'invoice.#', filter: { tier: 'gold' } })
    const unknown = await runCli(['bindings', 'no-such-queue', ...conn()])
    expect(unknown.code).toBe(1)
    expect(oneLine(unknown.stderr)).toBe("postbox: queue 'no-such-queue' does not exist; create it with createQueue()")
  })
})

describe('postbox peek', () => {
  it('reads messages without claiming them: no lease, attempt or availability changes', async () => {
    const queue = await freshQueue()
    await t.postbox.sendBatch(queue, [{ n: 1 }, { n: 2 }, { payload: { n: 3 }, priority: 5 }])
    // One message in flight, to show peek leaves a lease alone too.
    const [leased] = await t.postbox.receive(queue, { visibilityTimeout: '1h' })
    const before = await rows(queue)
    const result = await runCli(['peek', queue, '--json', ...conn()])
    expect(result.code).toBe(0)
    const page = JSON.parse(result.stdout)
    // Delivery order: the priority-5 message first (the one leased, by the claim's order), then the rest.
    expect(leased?.payload).toEqual({ n: 3 })
    expect(page.messages.map((m: { payload: unknown; state: string }) => [m.payload, m.state])).toEqual([
      [{ n: 3 }, 'in_flight'], [{ n: 1 }, 'ready'], [{ n: 2 }, 'ready'],
    ])
    expect(await rows(queue)).toEqual(before)
    // And the messages are still there for a consumer, at their first attempt.
    const received = await t.postbox.receive(queue, { max: 10 })
    expect(received.map((m) => m.attempt)).toEqual([1, 1])
  })

  it('pages in delivery order with --limit and the printed cursor', async () => {
    const queue = await freshQueue()
    await t.postbox.sendBatch(queue, [{ payload: 'low', priority: -1 }, 'a', 'b', { payload: 'high', priority: 9 }, 'c'])
    const seen: string[] = []
    let after: string[] = []
    for (let page = 0; page < 5; page++) {
      const result = await runCli(['peek', queue, '--limit', '2', '--json', ...after, ...conn()])
      expect(result.code).toBe(0)
      const body = JSON.parse(result.stdout) as { messages: { payload: string }[]; next: string | null }
      seen.push(...body.messages.map((m) => m.payload))
      if (!body.next) break
      after = ['--after', body.next]
    }
    expect(seen).toEqual(['high', 'a', 'b', 'c', 'low'])
    const table = await runCli(['peek', queue, '--limit', '2', ...conn()])
    expect(table.stdout).toMatch(new RegExp(`^more: postbox peek ${queue} --after \\S+$`, 'm'))
  })

  it('--dead shows the dead letters that came from the queue, with their error', async () => {
    const queue = await freshQueue({ maxAttempts: 1 })
    await t.postbox.send(queue, { bad: true })
    const [m] = await t.postbox.receive(queue)
    await t.postbox.nack(m!, { error: new Error('no such <customer>') })
    const table = await runCli(['peek', queue, '--dead', ...conn()])
    expect(table.code).toBe(0)
    expect(table.stdout).toMatch(new RegExp(`^ +${m!.id} \\| ${queue} +\\| +1 \\| .* \\| Error: no such <customer> .*\\| \\{"bad":true\\}$`, 'm'))
  })

  it('refuses an unknown queue and a bad --limit', async () => {
    const unknown = await runCli(['peek', 'nope', ...conn()])
    expect(unknown.code).toBe(1)
    expect(oneLine(unknown.stderr)).toMatch(/^postbox: queue 'nope' does not exist/)
    const limit = await runCli(['peek', 'nope', '--limit', '0', ...conn()])
    expect(limit.code).toBe(2)
    expect(limit.stderr).toMatch(/--limit.*expected a whole number from 1 to 1000/)
  })
})

describe('postbox send', () => {
  it('sends a JSON payload with options', async () => {
    const queue = await freshQueue()
    const result = await runCli(['send', queue, '{"to":"a@b.c"}', '--priority', '3', '--headers', '{"tenant":"t1"}', ...conn()])
    expect(result.code).toBe(0)
    const id = /^sent message (\d+) to /.exec(result.stdout)?.[1]
    const [m] = await t.postbox.receive(queue)
    expect(m).toMatchObject({ id, payload: { to: 'a@b.c' }, priority: 3, headers: { tenant: 't1' } })
  })

  it('refuses invalid JSON (exit 2) and an unknown queue (exit 1), and sends nothing', async () => {
    const queue = await freshQueue()
    const bad = await runCli(['send', queue, '{"to":', ...conn()])
    expect(bad.code).toBe(2)
    expect(oneLine(bad.stderr)).toMatch(/invalid for argument 'json'\. not valid JSON/)
    const unknown = await runCli(['send', 'nope', '{}', ...conn()])
    expect(unknown.code).toBe(1)
    expect(oneLine(unknown.stderr)).toMatch(/^postbox: queue 'nope' does not exist/)
    expect(await rows(queue)).toEqual([])
    expect(await t.sql(`SELECT 1 FROM "${t.schema}".messages WHERE queue = 'nope'`)).toEqual([])
  })
})

describe('postbox redrive / purge', () => {
  it('redrives dead letters back, or --to another queue, at most --max', async () => {
    const queue = await freshQueue({ maxAttempts: 1 })
    const other = await freshQueue()
    await t.postbox.sendBatch(queue, [1, 2, 3])
    for (const m of await t.postbox.receive(queue, { max: 3 })) await t.postbox.nack(m)
    const some = await runCli(['redrive', `${queue}.dead`, '--to', other, '--max', '1', ...conn()])
    expect(some).toMatchObject({ code: 0, stdout: `moved 1 message from ${queue}.dead to ${other}\n` })
    const rest = await runCli(['redrive', `${queue}.dead`, '--json', ...conn()])
    expect(JSON.parse(rest.stdout)).toEqual({ moved: 2 })
    const ready = async (q: string) => (await t.postbox.stats(q))[0]?.ready
    expect([await ready(queue), await ready(`${queue}.dead`), await ready(other)]).toEqual([2, 0, 1])
    const unknown = await runCli(['redrive', 'nope.dead', ...conn()])
    expect(unknown.code).toBe(1)
    expect(oneLine(unknown.stderr)).toMatch(/^postbox: queue 'nope.dead' does not exist/)
  })

  it('purge refuses without --yes (exit 2, nothing deleted), and with it deletes every message', async () => {
    const queue = await freshQueue()
    await t.postbox.sendBatch(queue, [1, 2, 3])
    await t.postbox.receive(queue) // one in flight: purged too
    const refused = await runCli(['purge', queue, ...conn()])
    expect(refused.code).toBe(2)
    expect(oneLine(refused.stderr)).toMatch(/add --yes/)
    expect(await rows(queue)).toHaveLength(3)
    const done = await runCli(['purge', queue, '--yes', ...conn()])
    expect(done).toMatchObject({ code: 0, stdout: `purged 3 messages from ${queue}\n` })
    expect(await rows(queue)).toEqual([])
    expect(await t.postbox.getQueue(queue)).not.toBeNull()
    const unknown = await runCli(['purge', 'nope', '--yes', ...conn()])
    expect(unknown.code).toBe(1)
    expect(oneLine(unknown.stderr)).toMatch(/^postbox: queue 'nope' does not exist/)
  })
})

describe('postbox pause / resume', () => {
  it('pauses and resumes a queue (exit 0), shows it in queues, and fails with one line for an unknown queue', async () => {
    const queue = await freshQueue()
    await t.postbox.updateQueue(queue, { keyRateLimit: { limit: 2, per: '1s' } })
    const paused = await runCli(['pause', queue, ...conn()])
    expect(paused).toMatchObject({ code: 0, stdout: `paused ${queue}\n` })
    expect((await t.postbox.getQueue(queue))?.paused).toBe(true)
    const again = await runCli(['pause', queue, '--json', ...conn()])
    expect(JSON.parse(again.stdout)).toEqual({ queue, paused: true, changed: false })
    const table = await runCli(['queues', ...conn()])
    expect(table.stdout).toMatch(new RegExp(`^ ${queue} .*\\| paused, 2/1s per key *$`, 'm'))
    const resumed = await runCli(['resume', queue, ...conn()])
    expect(resumed).toMatchObject({ code: 0, stdout: `resumed ${queue}\n` })
    expect((await t.postbox.stats(queue))[0]?.paused).toBe(false)
    const unknown = await runCli(['pause', 'nope', ...conn()])
    expect(unknown.code).toBe(1)
    expect(oneLine(unknown.stderr)).toMatch(/^postbox: queue 'nope' does not exist/)
    expect((await runCli(['resume', ...conn()])).code).toBe(2)
  })
})

describe('connection and usage', () => {
  it('takes the database from --url, --database-url or DATABASE_URL, and says so when there is none', async () => {
    const viaOld = await runCli(['stats', '--database-url', t.url, '--schema', t.schema, '--json'])
    expect(viaOld.code).toBe(0)
    const viaEnv = await runCli(['stats', '--schema', t.schema, '--json'], { DATABASE_URL: t.url })
    const names = (run: { stdout: string }) => (JSON.parse(run.stdout) as { queue: string }[]).map((q) => q.queue)
    expect(names(viaEnv)).toEqual(names(viaOld))
    expect(names(viaEnv)).toContain('c1')
    const none = await runCli(['stats', '--schema', t.schema])
    expect(none.code).toBe(1)
    expect(oneLine(none.stderr)).toBe('postbox: no database: pass --url or set DATABASE_URL')
  })

  it('says so in one line when the database is unreachable or the schema not installed', async () => {
    const down = await runCli(['stats', '--url', 'postgres://postgres@127.0.0.1:1/postgres'])
    expect(down.code).toBe(1)
    expect(oneLine(down.stderr)).toMatch(/^postbox: cannot reach the database: .*ECONNREFUSED/)
    const missing = await runCli(['stats', '--url', t.url, '--schema', 'no_such_schema'])
    expect(missing.code).toBe(1)
    expect(oneLine(missing.stderr)).toMatch(/is the schema installed\? run postbox migrate/)
  })

  it('exits 2 on bad usage and 0 on --help', async () => {
    expect((await runCli(['frobnicate'])).code).toBe(2)
    expect((await runCli(['send', 'q'])).code).toBe(2)
    expect((await runCli(['stats', '--nope'])).code).toBe(2)
    const help = await runCli(['--help'])
    expect(help.code).toBe(0)
    for (const command of ['queues', 'stats', 'peek', 'send', 'redrive', 'purge', 'pause', 'resume', 'dashboard', 'migrate']) expect(help.stdout).toContain(command)
  })
})

describe('postbox dashboard', () => {
  it('serves until Ctrl-C, then exits 0', async () => {
    const queue = await freshQueue()
    const cli = startCli(['dashboard', '--port', '0', ...conn()])
    const [, url] = await cli.waitForOutput(/postbox dashboard on (http:\/\/127\.0\.0\.1:\d+\/) \(.*read-only/)
    const body = await (await fetch(`${url}api/queues`)).json() as { queues: { queue: string }[] }
    expect(body.queues.map((q) => q.queue)).toContain(queue)
    expect(await cli.stop('SIGINT')).toBe(0)
  })

  it('fails with one line when the port is in use', async () => {
    const blocker = createServer()
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
    const port = (blocker.address() as { port: number }).port
    try {
      const result = await runCli(['dashboard', '--port', String(port), ...conn()])
      expect(result.code).toBe(1)
      expect(oneLine(result.stderr)).toBe(`postbox: port ${port} on 127.0.0.1 is already in use: choose another with --port`)
    } finally {
      blocker.close()
    }
  })

  it('refuses actions on a non-loopback address without a token', async () => {
    const result = await runCli(['dashboard', '--host', '0.0.0.0', '--allow-actions', '--port', '0', ...conn()])
    expect(result.code).toBe(1)
    expect(oneLine(result.stderr)).toMatch(/^postbox: refusing to serve actions on 0\.0\.0\.0 without a token/)
  })
})
