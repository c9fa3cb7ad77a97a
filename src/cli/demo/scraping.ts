import { setTimeout as sleep } from 'node:timers/promises'
import type { Worker } from '../../worker/worker.js'
import type { DemoContext, ScenarioResult } from './scenario.js'
import { scenarioResult, stopWorkers } from './scenario.js'
import { Tally } from './tally.js'

const URLS = 1_000
/** The URLs are spread over this many sites, each fetched at most PER_DOMAIN times a second. */
const DOMAINS = 100
const PER_DOMAIN = 2
const FIRST_FLEET = 2
const ADDED = 6
/** Pages each worker fetches at once. */
const CONCURRENCY = 2
/** The simulated fetch takes 20 to 40 ms: no network is used. */
const FETCH_MS = [20, 40] as const
/** The fleet grows once this many pages are done. */
const GROW_AT = 200
const TICK_MS = 300

/**
 * Scenario 3, a web scraping fleet: a finder queues a burst of 1,000 URLs over 100 sites in one
 * statement; a small fleet takes them at its own pace while the backlog waits in the queue (load
 * leveling); adding workers mid-run raises throughput (scaling) up to what politeness allows: the
 * queue's per-domain rate limit (2 fetches a second per site, enforced by the claim in the
 * database) holds however many workers join. The fetch is simulated: no network.
 */
export async function scrapingScenario(ctx: DemoContext): Promise<ScenarioResult> {
  const { postbox, say, signal } = ctx
  say(`   A burst of ${URLS.toLocaleString('en')} URLs on ${DOMAINS} sites, at most ${PER_DOMAIN} fetches a second per site; ${FIRST_FLEET} workers start, ${ADDED} more join after ${GROW_AT} pages.`)
  await postbox.createQueue('scrape', { retention: '1h', keyRateLimit: { limit: PER_DOMAIN, per: '1s' } })
  const urls = Array.from({ length: URLS }, (_, i) => {
    const domain = `shop-${String(i % DOMAINS).padStart(3, '0')}.example`
    return { payload: { url: `https://${domain}/products/${String(i + 1).padStart(4, '0')}` }, rateKey: domain }
  })
  const queuedAt = performance.now()
  await postbox.sendBatch('scrape', urls)
  say(`  finder   queued ${URLS.toLocaleString('en')} URLs in one statement (${(performance.now() - queuedAt).toFixed(0)} ms)`)

  const tally = new Tally()
  const fleet: Worker<{ url: string }>[] = []
  // When each site was hit, by the database clock (the claim's time, which the limit counts).
  const hits = new Map<string, number[]>()
  const hire = (n: number) => {
    for (let i = 0; i < n; i++) {
      fleet.push(tally.watch(postbox.work<{ url: string }>('scrape', async (m, c) => {
        const domain = m.headers['postbox-rate-key'] as string
        hits.set(domain, [...(hits.get(domain) ?? []), m.claimedAt.getTime()])
        // The "fetch": a pause of 20-40 ms instead of a request, aborted if the worker stops.
        await sleep(FETCH_MS[0] + Math.random() * (FETCH_MS[1] - FETCH_MS[0]), undefined, { signal: c.signal })
        return m.payload.url.length
      }, { concurrency: CONCURRENCY })))
    }
  }
  const done = () => tally.of('scrape').completed
  try {
    const started = performance.now()
    hire(FIRST_FLEET)
    let grewAt = { ms: 0, done: 0 }
    const grown = tally.until(() => done() >= GROW_AT, signal, `${GROW_AT} pages`, 30_000).then(() => {
      grewAt = { ms: performance.now(), done: done() }
      hire(ADDED)
      say(`  fleet    +${ADDED} workers joined: ${fleet.length} workers, ${fleet.length * CONCURRENCY} fetches at once`)
    })
    const finished = tally.until(() => done() >= URLS, signal, `all ${URLS} pages`, 30_000)
    const ticking = ticker(ctx, fleet, done, finished)
    await Promise.all([grown, finished, ticking])
    const ended = performance.now()
    const before = grewAt.done / ((grewAt.ms - started) / 1000)
    const after = (URLS - grewAt.done) / ((ended - grewAt.ms) / 1000)
    const note = `${FIRST_FLEET} workers ${before.toFixed(0)} URLs/s -> ${fleet.length} workers ${after.toFixed(0)} URLs/s (${(after / before).toFixed(1)}x)`
    say(`  -> all ${URLS.toLocaleString('en')} pages in ${((ended - started) / 1000).toFixed(1)} s; ${note}`)
    say(`  -> politeness held: at most ${busiestSecond(hits)} fetches of one site in any second (limit ${PER_DOMAIN}); ${DOMAINS} sites x ${PER_DOMAIN}/s caps the fleet at ${DOMAINS * PER_DOMAIN} URLs/s however many workers join`)
    return await scenarioResult(ctx, 'scraping fleet', ['scrape'], tally, note)
  } finally {
    await stopWorkers(fleet)
  }
}

/** The most hits of one site within any one second (windows starting at each hit). */
export function busiestSecond(hits: ReadonlyMap<string, readonly number[]>): number {
  let most = 0
  for (const times of hits.values()) {
    const sorted = [...times].sort((a, b) => a - b)
    for (let i = 0, j = 0; i < sorted.length; i++) {
      while ((sorted[j] as number) < (sorted[i] as number) - 999) j++
      most = Math.max(most, i - j + 1)
    }
  }
  return most
}

/** Prints a progress line every tick until `finished` settles: done, backlog, fleet size, rate. */
async function ticker(ctx: DemoContext, fleet: readonly unknown[], done: () => number, finished: Promise<void>): Promise<void> {
  let over = false
  void finished.then(() => (over = true), () => (over = true))
  let last = { at: performance.now(), done: 0 }
  while (!over) {
    await Promise.race([sleep(TICK_MS), finished.catch(() => {})])
    if (over || ctx.signal.aborted) return
    const [stats] = await ctx.postbox.stats('scrape')
    const now = { at: performance.now(), done: done() }
    const rate = (now.done - last.done) / ((now.at - last.at) / 1000)
    last = now
    const bar = '#'.repeat(Math.round((now.done / URLS) * 20)).padEnd(20, '.')
    ctx.say(`  scrape   [${bar}] ${String(now.done).padStart(4)}/${URLS}  backlog ${String(stats?.ready ?? 0).padStart(4)}  in flight ${String(stats?.inFlight ?? 0).padStart(2)}  ${fleet.length} workers  ${rate.toFixed(0).padStart(4)} URLs/s`)
  }
}
