import pg from 'pg'
import { describe, expect, inject, it } from 'vitest'
import { runDemo } from '../src/cli/demo.js'

describe('the demo (npm run demo)', () => {
  it('runs the five scenarios, and its summary counts what happened', async () => {
    const url = inject('databaseUrl')
    const lines: string[] = []
    const report = await runDemo(url, { say: (line) => lines.push(line) })
    expect(report.interrupted).toBe(false)
    const [signup, orders, scraping, events, stream] = report.results

    // Sign-up: five committed sign-ups, five emails; the rolled-back one sent nothing.
    expect(signup).toMatchObject({ scenario: 'sign-up welcome email', sent: 5, handled: 5, retried: 0, deadLettered: 0 })
    expect(lines).toContain('           checked in the database: no user row and no message 3, so no email')

    // Orders: three messages per order; the shipping label retried once and then succeeded; the
    // poison order used the fraud check's three attempts and was dead-lettered.
    expect(orders).toMatchObject({ scenario: 'order processing', sent: 15, handled: 14, retried: 3, deadLettered: 1 })
    expect(orders?.byQueue['inventory']).toMatchObject({ completed: 5, failed: 0 })
    expect(orders?.byQueue['shipping-label']).toMatchObject({ completed: 5, failed: 1, retried: 1, deadLettered: 0 })
    expect(orders?.byQueue['fraud-check']).toMatchObject({ completed: 4, failed: 3, retried: 2, deadLettered: 1 })

    // Scraping: the burst of 1,000 URLs on 100 sites all handled, by a fleet that grew mid-run.
    expect(scraping).toMatchObject({ scenario: 'scraping fleet', sent: 1000, handled: 1000, retried: 0, deadLettered: 0 })
    expect(lines.some((line) => line.includes('+6 workers joined'))).toBe(true)
    // The per-site rate limit held while the fleet grew: claims of one site, by the database clock.
    expect(lines).toContainEqual(expect.stringMatching(/politeness held: at most [12] fetches of one site in any second \(limit 2\)/))

    // Order events: five events published once; each reached the queues bound to it (eleven
    // copies: by pattern, and through the header filters), and the one nobody subscribed to was counted.
    expect(events).toMatchObject({ scenario: 'order events (topics)', sent: 11, handled: 11, retried: 0, deadLettered: 0 })
    expect(events?.byQueue['reserve-stock']).toMatchObject({ completed: 3 })
    expect(events?.byQueue['print-label']).toMatchObject({ completed: 2 })
    expect(events?.byQueue['screen-fraud']).toMatchObject({ completed: 2 })
    expect(events?.byQueue['audit-log']).toMatchObject({ completed: 4 })
    expect(events?.note).toContain('1 unroutable, counted')
    expect(lines).toContain('  shop          published invoice.us.paid (order 102, invoice, ship) -> no subscriber')

    // Order stream: six events read by analytics once and by billing twice (replayed after its fix).
    expect(stream).toMatchObject({ scenario: 'order stream (replay)', sent: 6, handled: 18, retried: 0, deadLettered: 0 })
    expect(stream?.byQueue['analytics']).toMatchObject({ completed: 6 })
    expect(stream?.byQueue['billing']).toMatchObject({ completed: 12 })
    expect(stream?.note).toContain('90.00 EUR invoiced')

    // The summary table prints those counts; the operator SQL ran and shows the dead letter.
    expect(lines).toContainEqual(expect.stringMatching(/^ order processing +\| +15 \| +14 \| +3 \| +1 \|/))
    expect(lines).toContainEqual(expect.stringMatching(/^ total +\| +1037 \| +1048 \| +3 \| +1 \|/))
    expect(lines).toContain(`SELECT * FROM ${report.schema}.queue_stats;`)
    expect(lines).toContainEqual(expect.stringMatching(/^ screen-fraud +\| order\.\*\.placed +\| \{"payment": \["card", "wallet"\]\}/))
    expect(lines).toContainEqual(expect.stringMatching(/^ fraud-check +\|/))
    expect(lines.some((line) => line.includes('fraud-check.dead') && line.includes("no risk model for country 'Atlantis'"))).toBe(true)

    // With a database of its own choosing (not embedded) it drops both of its schemas.
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    try {
      const { rows } = await client.query('SELECT nspname FROM pg_namespace WHERE nspname = ANY ($1)', [[report.schema, report.appSchema]])
      expect(rows).toEqual([])
    } finally {
      await client.end()
    }
  }, 60_000)
})
