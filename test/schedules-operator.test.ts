import { createServer, type Server } from 'node:http'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { createDashboard } from '../src/dashboard/index.js'
import { runCli } from './support/built-cli.js'
import { useTestSchema } from './support/test-schema.js'

// What an operator sees of schedules: `postbox schedules` (table and JSON) and the dashboard's
// schedules page and API.
vi.setConfig({ testTimeout: 120_000 })
const t = useTestSchema()
const conn = () => ['--url', t.url, '--schema', t.schema]

beforeAll(async () => {
  await t.postbox.createQueue('reports')
  await t.postbox.schedule('nightly', { cron: '0 3 * * *', timezone: 'Europe/Paris', queue: 'reports' })
  await t.postbox.schedule('backfill', { cron: '*/5 * * * *', queue: 'reports', missed: 'all' })
  await t.sql(`UPDATE "${t.schema}".schedules SET next_fire_at = '2030-01-01T00:05:00Z', last_fire_at = '2030-01-01T00:00:00Z' WHERE name = 'backfill'`)
})

describe('postbox schedules', () => {
  it('lists the schedules with their next and last fire, as a table and as JSON', async () => {
    const table = await runCli(['schedules', ...conn()])
    expect(table.code).toBe(0)
    expect(table.stdout).toMatch(/^ backfill +\| reports +\| \*\/5 \* \* \* \* +\| UTC +\| all +\| 2030-01-01 00:05:00Z \| 2030-01-01 00:00:00Z/m)
    expect(table.stdout).toMatch(/^ nightly +\| reports +\| 0 3 \* \* \* +\| Europe\/Paris +\| latest +\| \d{4}-\d\d-\d\d 0[12]:00:00Z \|\s*$/m)
    const json = await runCli(['schedules', '--json', ...conn()])
    expect(JSON.parse(json.stdout)).toEqual([
      expect.objectContaining({ name: 'backfill', queue: 'reports', cron: '*/5 * * * *', timezone: 'UTC', missed: 'all', nextFireAt: '2030-01-01T00:05:00.000Z', lastFireAt: '2030-01-01T00:00:00.000Z' }),
      expect.objectContaining({ name: 'nightly', timezone: 'Europe/Paris', lastFireAt: null }),
    ])
  })
})

describe('the dashboard schedules page', () => {
  let server: Server
  let url: string
  const dashboard = createDashboard(t.postbox, { sampleInterval: '1h' })
  beforeAll(async () => {
    server = createServer(dashboard.handle)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
  })
  afterAll(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
    await dashboard.close()
  })

  it('shows each schedule with its next fire and how soon, from the database clock', async () => {
    const res = await fetch(`${url}/schedules`)
    expect(res.status).toBe(200)
    const body = await res.text()
    expect(body).toMatch(/<tr data-schedule="backfill">[\s\S]*?<code>\*\/5 \* \* \* \*<\/code>[\s\S]*?data-col="next">2030-01-01 00:05:00Z <span class="muted">\(in \d+d \d\dh\)<\/span>[\s\S]*?data-col="last">2030-01-01 00:00:00Z</)
    // How soon, as formatDuration writes it: `3h 05m`, or `56m 50s` within the hour before 02:00Z.
    expect(body).toMatch(/<tr data-schedule="nightly">[\s\S]*?Europe\/Paris[\s\S]*?data-col="next">\S+ \S+Z <span class="muted">\(in (?:\d+h \d\dm|\d+m \d\ds|[\d.]+s|\d+ms)\)/)
    const home = await (await fetch(`${url}/`)).text()
    expect(home).toContain('href="/schedules"')
  })

  it('serves them as JSON under /api/schedules', async () => {
    const api = await (await fetch(`${url}/api/schedules`)).json() as { at: string; schedules: { name: string; nextFireAt: string }[] }
    expect(api.schedules.map((s) => [s.name, s.nextFireAt.slice(0, 4)])).toEqual([['backfill', '2030'], ['nightly', expect.stringMatching(/^20\d\d$/)]])
    expect(Number.isNaN(Date.parse(api.at))).toBe(false)
  })
})
