import { setTimeout as sleep } from 'node:timers/promises'
import type { Worker } from '../../worker/worker.js'
import type { DemoContext, ScenarioResult } from './scenario.js'
import { scenarioResult, stopWorkers } from './scenario.js'
import { Tally } from './tally.js'

const URLS = 1_000
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
 * Scenario 3, a web scraping fleet: a finder queues a burst of 1,000 URLs in one statement; a
 * small fleet takes them at its own pace while the backlog waits in the queue (load leveling);
 * adding workers mid-run raises throughput (scaling). The fetch is simulated: no network.
 */
export async function scrapingScenario(ctx: DemoContext): Promise<ScenarioResult> {
  const { postbox, say, signal } = ctx
  say(`   A burst of ${URLS.toLocaleString('en')} URLs; ${FIRST_FLEET} workers start, ${ADDED} more join after ${GROW_AT} pages.`)
  await postbox.createQueue('scrape', { retention: '1h' })
  const urls = Array.from({ length: URLS }, (_, i) => ({ url: `https://shop.example/products/${String(i + 1).padStart(4, '0')}` }))
  const queuedAt = performance.now()
  await postbox.sendBatch('scrape', urls)
  say(`  finder   queued ${URLS.toLocaleString('en')} URLs in one statement (${(performance.now() - queuedAt).toFixed(0)} ms)`)

  const tally = new Tally()
  const fleet: Worker<{ url: string }>[] = []
  const hire = (n: number) => {
    for (let i = 0; i < n; i++) {
      fleet.push(tally.watch(postbox.work<{ url: string }>('scrape', async (m, c) => {
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
    return await scenarioResult(ctx, 'scraping fleet', ['scrape'], tally, note)
  } finally {
    await stopWorkers(fleet)
  }
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
