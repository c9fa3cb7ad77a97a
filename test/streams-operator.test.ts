import { createServer, type Server } from 'node:http'
import { beforeAll, describe, expect, it, vi } from 'vitest'
import { createDashboard } from '../src/dashboard/index.js'
import { runCli } from './support/built-cli.js'
import { parsePrometheusText, sampleValue } from './support/prometheus-text.js'
import { useTestSchema } from './support/test-schema.js'

// The operator surface of streams: `postbox streams`, the dashboard's streams section and
// /api/streams, and postbox_stream_lag. The CLI runs as the built binary, a process per run.
vi.setConfig({ testTimeout: 120_000 })
const t = useTestSchema()
const conn = () => ['--url', t.url, '--schema', t.schema]

beforeAll(async () => {
  await t.postbox.createStream('ops-orders', { partitions: 2, retention: '3d' })
  await t.postbox.createStream('ops-empty')
  await t.postbox.appendBatch('ops-orders', Array.from({ length: 10 }, (_, n) => ({ payload: { n }, key: `k${n}` })))
  // A group that read nothing yet: its lag is every event.
  await t.sql(`SELECT * FROM "${t.schema}".stream_rebalance('ops-orders', 'billing', 'm1', interval '1 minute')`)
})

describe('streams for operators', () => {
  it('postbox streams: a table and JSON, with each group\'s lag', async () => {
    const table = await runCli(['streams', ...conn()])
    expect(table.code).toBe(0)
    expect(table.stdout).toMatch(/^ ops-empty +\| +1 \| 7d 00h +\| +0 \| +\| +\| +\|$/m)
    expect(table.stdout).toMatch(/^ ops-orders +\| +2 \| 3d 00h +\| +10 \| billing \| +10 \| +0 \| +1$/m)
    const json = await runCli(['streams', '--json', ...conn()])
    expect(JSON.parse(json.stdout)).toContainEqual(expect.objectContaining({ stream: 'ops-orders', group: 'billing', lag: 10, members: 1 }))
  })

  it('postbox_stream_lag per stream, group and partition', async () => {
    const families = parsePrometheusText(await t.postbox.metrics())
    const lag = families.get('postbox_stream_lag')!
    const total = lag.samples.filter((x) => x.labels.stream === 'ops-orders' && x.labels.group === 'billing').reduce((sum, x) => sum + x.value, 0)
    expect(total).toBe(10)
    expect(sampleValue(families, 'postbox_stream_lag', { stream: 'ops-orders', group: 'billing', partition: '0' })).toBeGreaterThanOrEqual(0)
  })

  it('the dashboard shows streams and their groups\' lag, and /api/streams has them as JSON', async () => {
    const dashboard = createDashboard(t.postbox, { sampleInterval: '1h' })
    const server: Server = createServer(dashboard.handle)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
    try {
      const page = await (await fetch(`${url}/`)).text()
      expect(page).toContain('<h2>Streams</h2>')
      expect(page).toMatch(/data-stream="ops-orders" data-group="billing"[\s\S]*?data-col="lag">10</)
      const api = await (await fetch(`${url}/api/streams`)).json() as { streams: { stream: string; group: string | null; lag: number | null }[] }
      expect(api.streams).toContainEqual(expect.objectContaining({ stream: 'ops-orders', group: 'billing', lag: 10 }))
    } finally {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
      await dashboard.close()
    }
  })
})
