import { createServer, type Server } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { createDashboard, startDashboardServer, DashboardListenError, type Dashboard, type DashboardOptions } from '../src/dashboard/index.js'
import { StatsSampler } from '../src/dashboard/stats-sampler.js'
import { InvalidOptionsError } from '../src/index.js'
import { parsePrometheusText, sampleValue } from './support/prometheus-text.js'
import { useTestSchema } from './support/test-schema.js'

// The dashboard over HTTP (node:http, fetch), against a real Postgres. The browser tests are in
// dashboard-browser.test.ts; these cover what a browser does not show: headers, refusals, JSON.
const t = useTestSchema()
const open: { close(): Promise<void> }[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((o) => o.close()))
})

/** Serves a dashboard on a free loopback port; closed after the test. */
async function serve(options: DashboardOptions = {}, mount?: (dashboard: Dashboard) => Parameters<typeof createServer>[1]): Promise<string> {
  const dashboard = createDashboard(t.postbox, { sampleInterval: '1h', ...options })
  const server: Server = createServer(mount ? mount(dashboard) : dashboard.handle)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  open.push({ close: async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
    await dashboard.close()
  } })
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`
}

/** A queue with one dead letter whose payload and error hold markup. */
async function queueWithDeadLetter(name: string): Promise<void> {
  await t.postbox.createQueue(name, { maxAttempts: 1 })
  await t.postbox.send(name, { html: '<script>alert(1)</script>' })
  const [m] = await t.postbox.receive(name)
  await t.postbox.nack(m!, { error: new Error('bad <img src=x onerror=alert(2)>') })
}

const deadCount = async (name: string) => (await t.postbox.stats(`${name}.dead`))[0]?.ready

describe('the dashboard pages and API', () => {
  it('lists queues with their counts, in HTML and JSON, and escapes user data', async () => {
    await queueWithDeadLetter('d-page')
    await t.postbox.sendBatch('d-page', [1, 2])
    const url = await serve()
    const res = await fetch(`${url}/`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'")
    const page = await res.text()
    expect(page).toMatch(/<tr data-queue="d-page">[\s\S]*?data-col="ready">2<[\s\S]*?data-col="dead">.*>1</)
    const api = await (await fetch(`${url}/api/queues`)).json() as { queues: { queue: string; ready: number; dead: number; isDeadLetterQueue: boolean }[] }
    expect(api.queues.find((q) => q.queue === 'd-page')).toMatchObject({ ready: 2, dead: 1, isDeadLetterQueue: false })
    expect(api.queues.find((q) => q.queue === 'd-page.dead')).toMatchObject({ ready: 1, isDeadLetterQueue: true })
    const deadPage = await (await fetch(`${url}/queues/d-page.dead`)).text()
    expect(deadPage).toContain('&lt;script&gt;alert(1)&lt;/script&gt;')
    expect(deadPage).toContain('bad &lt;img src=x onerror=alert(2)&gt;')
    expect(deadPage).not.toContain('<script>alert')
    expect(deadPage).not.toContain('<img src=x')
    const messages = await (await fetch(`${url}/api/queues/d-page/messages?dead=1`)).json() as { messages: { payload: unknown }[] }
    expect(messages.messages.map((m) => m.payload)).toEqual([{ html: '<script>alert(1)</script>' }])
  })

  it('lists the bindings with their filters, escaped, and the unrouted publishes', async () => {
    await t.postbox.createQueue('d-bound')
    await t.postbox.bind('d-bound', 'orders.*.created', { filter: { region: ['<eu>', 'us'] } })
    await t.postbox.publish('nobody.listens.here', { n: 1 })
    const url = await serve()
    const page = await (await fetch(`${url}/bindings`)).text()
    expect(page).toMatch(/<tr data-queue="d-bound">[\s\S]*?<code>orders\.\*\.created<\/code>[\s\S]*?&lt;eu&gt;/)
    expect(page).not.toContain('<eu>')
    expect(page).toMatch(/data-testid="unrouted">Unrouted publishes: <strong>[1-9]/)
    expect(page).toContain('<code>nobody.listens.here</code>')
    const api = await (await fetch(`${url}/api/bindings`)).json() as { bindings: unknown[]; unrouted: { count: number; lastRoutingKey: string } }
    expect(api.bindings).toContainEqual({ queue: 'd-bound', pattern: 'orders.*.created', filter: { region: ['<eu>', 'us'] } })
    expect(api.unrouted).toMatchObject({ lastRoutingKey: 'nobody.listens.here' })
    expect(api.unrouted.count).toBeGreaterThanOrEqual(1)
  })

  it('shows a paused queue and a queue\'s limits in the list, in HTML and JSON', async () => {
    await t.postbox.createQueue('d-flow', { maxInFlight: 20, keyRateLimit: { limit: 2, per: '1s' } })
    await t.postbox.pauseQueue('d-flow')
    const url = await serve()
    const page = await (await fetch(`${url}/`)).text()
    expect(page).toMatch(/<tr data-queue="d-flow">\s*<td class="name">.*data-testid="paused">paused<.*max 20 in flight, 2\/1s per key/)
    expect(page).not.toMatch(/<tr data-queue="d-flow.dead">\s*<td class="name">[^\n]*paused/)
    const api = await (await fetch(`${url}/api/queues`)).json() as { queues: { queue: string; paused: boolean; flow: string }[] }
    expect(api.queues.find((q) => q.queue === 'd-flow')).toMatchObject({ paused: true, flow: 'paused, max 20 in flight, 2/1s per key' })
    await t.postbox.resumeQueue('d-flow')
    expect((await (await fetch(`${url}/api/queues`)).json() as { queues: { queue: string; paused: boolean }[] }).queues.find((q) => q.queue === 'd-flow'))
      .toMatchObject({ paused: false })
  })

  it('answers 404 for an unknown queue and path, and serves /metrics as Prometheus text', async () => {
    await t.postbox.createQueue('d-metrics')
    await t.postbox.send('d-metrics', 1)
    const url = await serve()
    const missing = await fetch(`${url}/queues/d-nowhere`)
    expect(missing.status).toBe(404)
    expect(await missing.text()).toContain('queue &#39;d-nowhere&#39; does not exist')
    expect((await fetch(`${url}/api/queues/d-nowhere`)).status).toBe(404)
    expect((await fetch(`${url}/no/such/page`)).status).toBe(404)
    expect((await fetch(`${url}/queues/%E0%A4%A`)).status).toBe(400)
    const metrics = await fetch(`${url}/metrics`)
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/)
    const families = parsePrometheusText(await metrics.text())
    expect(sampleValue(families, 'postbox_queue_messages', { queue: 'd-metrics', state: 'ready' })).toBe(1)
  })

  it('mounts under a path in an app\'s own server, passing other paths on', async () => {
    await t.postbox.createQueue('d-mounted')
    const url = await serve({ basePath: '/ops/postbox' }, (dashboard) => (req, res) => {
      dashboard.handle(req, res, () => res.writeHead(418).end('the app'))
    })
    const page = await (await fetch(`${url}/ops/postbox/`)).text()
    expect(page).toContain('href="/ops/postbox/queues/d-mounted"')
    expect(page).toContain('src="/ops/postbox/assets/dashboard.js"')
    expect((await fetch(`${url}/ops/postbox/api/queues`)).status).toBe(200)
    expect((await fetch(`${url}/somewhere/else`)).status).toBe(418)
    expect((await fetch(`${url}/`)).status).toBe(418) // the app's own root, not the dashboard's
  })
})

describe('actions', () => {
  it('a read-only dashboard refuses redrive, and moves nothing', async () => {
    await queueWithDeadLetter('d-readonly')
    const url = await serve()
    const page = await (await fetch(`${url}/queues/d-readonly.dead`)).text()
    expect(page).not.toContain('<form class="redrive"')
    expect(page).toContain('postbox redrive d-readonly.dead')
    const json = await fetch(`${url}/api/queues/d-readonly.dead/redrive`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
    expect(json.status).toBe(403)
    expect(await json.json()).toEqual({ error: expect.stringMatching(/read-only/) })
    const form = await fetch(`${url}/actions/redrive`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'queue=d-readonly.dead', redirect: 'manual' })
    expect(form.status).toBe(403)
    expect(await deadCount('d-readonly')).toBe(1)
  })

  it('with actions, redrives from the JSON API and from the form, and refuses forged or cross-site posts', async () => {
    await queueWithDeadLetter('d-actions')
    const url = await serve({ allowActions: true })
    const form = (body: string, headers: Record<string, string> = {}) =>
      fetch(`${url}/actions/redrive`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body, redirect: 'manual' })
    // No CSRF token, a wrong one, a cross-site origin, a content type a form cannot have: all refused.
    expect((await form('queue=d-actions.dead')).status).toBe(403)
    expect((await form('queue=d-actions.dead&csrf=guess')).status).toBe(403)
    const page = await (await fetch(`${url}/queues/d-actions.dead`)).text()
    const csrf = /name="csrf" value="([^"]+)"/.exec(page)?.[1] as string
    expect(csrf).toBeTruthy()
    expect((await form(`queue=d-actions.dead&csrf=${csrf}`, { origin: 'https://evil.example' })).status).toBe(403)
    expect((await form(`queue=d-actions.dead&csrf=${csrf}`, { 'sec-fetch-site': 'cross-site' })).status).toBe(403)
    expect((await fetch(`${url}/api/queues/d-actions.dead/redrive`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' })).status).toBe(415)
    expect(await deadCount('d-actions')).toBe(1)

    const done = await form(`queue=d-actions.dead&csrf=${csrf}`, { origin: url })
    expect(done.status).toBe(303)
    expect(done.headers.get('location')).toBe('/queues/d-actions.dead?redriven=1')
    expect(await deadCount('d-actions')).toBe(0)
    expect((await t.postbox.stats('d-actions'))[0]?.ready).toBe(1)

    await queueWithDeadLetter('d-actions-json')
    const json = await fetch(`${url}/api/queues/d-actions-json.dead/redrive`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ max: 5 }) })
    expect(await json.json()).toEqual({ moved: 1 })
    const bad = await fetch(`${url}/api/queues/d-actions-json.dead/redrive`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ max: 0 }) })
    expect(bad.status).toBe(400)
  })
})

describe('access', () => {
  it('with a token, needs it: Bearer for scripts, a cookie from /login for browsers', async () => {
    await t.postbox.createQueue('d-token')
    const token = 'correct horse battery staple'
    const url = await serve({ token })
    const page = await fetch(`${url}/`, { redirect: 'manual' })
    expect(page.status).toBe(303)
    expect(page.headers.get('location')).toBe('/login')
    expect((await fetch(`${url}/api/queues`)).status).toBe(401)
    expect((await fetch(`${url}/metrics`)).status).toBe(401)
    expect((await fetch(`${url}/api/queues`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200)
    expect((await fetch(`${url}/api/queues`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401)

    const login = (value: string) => fetch(`${url}/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: value }).toString(), redirect: 'manual' })
    expect((await login('wrong')).status).toBe(401)
    const signedIn = await login(token)
    expect(signedIn.status).toBe(303)
    const cookie = (signedIn.headers.get('set-cookie') as string).split(';')[0] as string
    expect(signedIn.headers.get('set-cookie')).toMatch(/HttpOnly; SameSite=Strict/)
    expect(cookie).not.toContain(token.split(' ')[0])
    expect((await fetch(`${url}/`, { headers: { cookie } })).status).toBe(200)
    expect((await fetch(`${url}/`, { headers: { cookie: 'postbox_dashboard=forged' }, redirect: 'manual' })).status).toBe(303)
  })

  it('the standalone server answers only to loopback names, refuses actions off loopback without a token, and reports a taken port', async () => {
    const server = await startDashboardServer(t.postbox, { port: 0, sampleInterval: '1h' })
    open.push(server)
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/)
    expect((await fetch(`${server.url}api/queues`)).status).toBe(200)
    // DNS rebinding: a page on another name that resolves to 127.0.0.1.
    const rebound = await new Promise<number>((resolve, reject) => {
      import('node:http').then(({ get }) => get(`${server.url}api/queues`, { headers: { host: `evil.example:${server.port}` } }, (res) => resolve(res.statusCode as number)).on('error', reject))
    })
    expect(rebound).toBe(403)
    await expect(startDashboardServer(t.postbox, { host: '0.0.0.0', port: 0, allowActions: true })).rejects.toThrow(InvalidOptionsError)
    await expect(startDashboardServer(t.postbox, { port: server.port })).rejects.toThrow(DashboardListenError)
  })
})

describe('the sampler', () => {
  it('measures sends and removals per second from two readings of the database', async () => {
    await t.postbox.createQueue('d-rates')
    const sampler = new StatsSampler(t.postbox, { intervalMs: 3_600_000, keepMs: 3_600_000, rateWindowMs: 3_600_000 })
    await sampler.sample()
    expect(sampler.rates().sentPerSecond).toBeNull()
    await t.postbox.sendBatch('d-rates', Array.from({ length: 10 }, (_, i) => i))
    const got = await t.postbox.receive('d-rates', { max: 4 })
    await t.postbox.ack(got)
    await sampler.sample()
    const rates = sampler.rates()
    const seconds = rates.windowMs / 1000
    // This file's schema is its own, and nothing else sends to it meanwhile: 10 sent, 4 acked.
    expect((rates.sentPerSecond as number) * seconds).toBeCloseTo(10, 6)
    expect((rates.removedPerSecond as number) * seconds).toBeCloseTo(4, 6)
    expect((sampler.netPerSecond('d-rates') as number) * seconds).toBeCloseTo(6, 6)
  })
})
