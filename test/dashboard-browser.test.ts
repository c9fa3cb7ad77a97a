import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDashboardServer, type DashboardServer, type DashboardServerOptions } from '../src/dashboard/index.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'

// The dashboard in a real browser: Chromium from the Debian package, driven by playwright-core
// (Playwright's own browser download cannot reach its host from these machines). In CI a
// missing Chromium fails the run; elsewhere these tests are skipped, saying why.
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const present = existsSync(CHROMIUM)
const inCi = process.env.CI === 'true' || process.env.CI === '1'
if (!present && !inCi) console.warn(`dashboard-browser.test.ts: skipped, no Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)`)

/** With POSTBOX_SCREENSHOTS=1 (npm run docs:screenshots) the screenshots replace those in docs/images/. */
const SCREENSHOTS = process.env.POSTBOX_SCREENSHOTS === '1' ? new URL('../docs/images/', import.meta.url).pathname : undefined

const t = useTestSchema()
let browser: Browser

beforeAll(async () => {
  if (!present) return
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  })
})
afterAll(async () => {
  await browser?.close()
})

/** Serves a dashboard for one test and opens a page on it; both closed afterwards. */
async function withDashboard(
  options: DashboardServerOptions,
  fn: (page: Page, server: DashboardServer) => Promise<void>,
  expectedConsole: RegExp | undefined = undefined,
): Promise<void> {
  const server = await startDashboardServer(t.postbox, { port: 0, sampleInterval: '200ms', ...options })
  const page = await browser.newPage({ viewport: { width: 1200, height: 760 } })
  page.setDefaultTimeout(10_000)
  const problems: string[] = []
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`))
  page.on('console', (m) => {
    if (m.type() === 'error' && !expectedConsole?.test(m.text())) problems.push(`console: ${m.text()}`)
  })
  try {
    await fn(page, server)
    // No script error, and nothing the Content-Security-Policy blocked.
    expect(problems).toEqual([])
  } finally {
    await page.close()
    await server.close()
  }
}

async function screenshot(page: Page, name: string): Promise<void> {
  const png = await page.screenshot({ fullPage: true })
  expect(png.length).toBeGreaterThan(1000)
  if (!SCREENSHOTS) return
  mkdirSync(SCREENSHOTS, { recursive: true })
  writeFileSync(`${SCREENSHOTS}${name}.png`, png)
}

/** A queue with one dead letter (maxAttempts 1, one failed delivery). */
async function deadLetterIn(queue: string, payload: unknown, error: string): Promise<string> {
  await t.postbox.createQueue(queue, { maxAttempts: 1 })
  const { id } = await t.postbox.send(queue, payload)
  const [m] = await t.postbox.receive(queue)
  await t.postbox.nack(m!, { error: new Error(error) })
  return id
}

describe.runIf(present || inCi)('the dashboard in Chromium', { timeout: 90_000 }, () => {
  it('Chromium is installed', () => {
    expect(present, `no Chromium at ${CHROMIUM}: apt-get install -y chromium`).toBe(true)
  })

  it('shows the queues with their counts and a depth chart, and a queue\'s messages', async () => {
    await t.postbox.createQueue('emails')
    await t.postbox.createQueue('thumbnails')
    await deadLetterIn('orders', { orderId: 'A-1042', country: 'Atlantis' }, "no risk model for country 'Atlantis'")
    await withDashboard({}, async (page, server) => {
      // Some history for the charts: a burst, part of it consumed, another burst.
      await t.postbox.sendBatch('emails', Array.from({ length: 40 }, (_, i) => ({ to: `user${i}@example.com` })))
      await waitFor('samples', async () => (await (await fetch(`${server.url}api/queues/emails`)).json() as { history: { times: number[] } }).history.times.length >= 3)
      await t.postbox.ack(await t.postbox.receive('emails', { max: 25 }))
      await t.postbox.sendBatch('thumbnails', Array.from({ length: 12 }, (_, i) => ({ imageId: i })))
      await t.postbox.receive('thumbnails', { max: 3, visibilityTimeout: '5m' })
      await waitFor('a sample after the sends', async () => {
        const { queues } = await (await fetch(`${server.url}api/queues`)).json() as { queues: { queue: string; ready: number; inFlight: number }[] }
        const q = queues.find((x) => x.queue === 'thumbnails')
        return q?.ready === 9 && q.inFlight === 3
      })

      await page.goto(server.url)
      const emails = page.locator('tr[data-queue="emails"]')
      await expect.poll(() => emails.locator('[data-col="ready"]').textContent()).toBe('15')
      const thumbnails = page.locator('tr[data-queue="thumbnails"]')
      expect(await thumbnails.locator('[data-col="ready"]').textContent()).toBe('9')
      expect(await thumbnails.locator('[data-col="in-flight"]').textContent()).toBe('3')
      expect(await page.locator('tr[data-queue="orders"] [data-col="dead"]').textContent()).toBe('1')
      expect(await emails.locator('svg.chart polyline').count()).toBe(1)
      expect(await page.getByTestId('mode').textContent()).toBe('read-only')
      await screenshot(page, 'dashboard-queues')

      await emails.getByRole('link', { name: 'emails' }).click()
      await page.waitForURL(/\/queues\/emails$/)
      expect(await page.getByTestId('ready').textContent()).toBe('15')
      expect(await page.locator('table.messages tbody tr').count()).toBe(15)
      expect(await page.locator('table.messages tbody tr').first().textContent()).toContain('user25@example.com')
    })
  })

  it('redrives a dead letter with a click', async () => {
    const id = await deadLetterIn('payments', { invoice: 7, note: '<b>not bold</b>' }, 'card declined <insufficient funds>')
    await withDashboard({ allowActions: true }, async (page, server) => {
      await page.goto(server.url)
      expect(await page.getByTestId('mode').textContent()).toBe('actions enabled')
      await page.locator('tr[data-queue="payments"] [data-col="dead"] a').click()
      await page.waitForURL(/\/queues\/payments\?view=dead$/)
      const row = page.locator(`table.messages tr[data-id="${id}"]`)
      expect(await row.textContent()).toContain('card declined <insufficient funds>')
      expect(await row.locator('code').textContent()).toBe('{"note":"<b>not bold</b>","invoice":7}') // jsonb's key order
      expect(await row.locator('b').count()).toBe(0) // the payload's markup is text, not markup

      await page.getByTestId('dead-letter-queue').click()
      await page.waitForURL(/\/queues\/payments\.dead$/)
      await screenshot(page, 'dashboard-dead-letters')
      await page.getByRole('button', { name: 'Redrive' }).click()
      await page.waitForURL(/redriven=1$/)
      expect(await page.getByRole('status').textContent()).toBe('Redrove 1 message.')
      expect(await page.getByTestId('ready').textContent()).toBe('0')
      expect(await page.locator('table.messages tbody tr').count()).toBe(0)
    })
    const [back] = await t.postbox.receive('payments')
    expect(back).toMatchObject({ id, payload: { invoice: 7, note: '<b>not bold</b>' }, attempt: 1 })
    await t.postbox.ack(back!)
  })

  it('a read-only dashboard offers no redrive and refuses one posted from the page', async () => {
    const id = await deadLetterIn('invoices', { invoice: 9 }, 'template missing')
    await withDashboard({}, async (page, server) => {
      await page.goto(`${server.url}queues/invoices.dead`)
      expect(await page.locator(`tr[data-id="${id}"]`).count()).toBe(1)
      expect(await page.getByRole('button', { name: 'Redrive' }).count()).toBe(0)
      expect(await page.getByTestId('read-only-note').textContent()).toContain('postbox redrive invoices.dead')
      // A request made from the page itself, as a script on it would: refused.
      const status = await page.evaluate(async () => {
        const res = await fetch('/actions/redrive', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'queue=invoices.dead' })
        const json = await fetch('/api/queues/invoices.dead/redrive', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
        return [res.status, json.status]
      })
      expect(status).toEqual([403, 403])
    }, /status of 403/)
    expect((await t.postbox.stats('invoices.dead'))[0]?.ready).toBe(1)
  })
})
