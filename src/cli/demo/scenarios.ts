import { orderEventsScenario } from './order-events.js'
import { ordersScenario } from './orders.js'
import { orderStreamScenario } from './order-stream.js'
import type { DemoContext, ScenarioResult } from './scenario.js'
import { scrapingScenario } from './scraping.js'
import { signupScenario } from './signup.js'

/** The demo's scenarios, in the order they run. */
export const SCENARIOS: readonly { title: string; run: (ctx: DemoContext) => Promise<ScenarioResult> }[] = [
  { title: '1. Sign-up sends a welcome email', run: signupScenario },
  { title: '2. Order processing', run: ordersScenario },
  { title: '3. Web scraping fleet', run: scrapingScenario },
  { title: '4. Order events, published once to every subscriber', run: orderEventsScenario },
  { title: '5. One stream, two consumer groups, one replayed after a fix', run: orderStreamScenario },
]

/**
 * Runs every scenario against a migrated postbox schema, creating the app's schema for the
 * business tables first, and returns what each did. The caller drops the app schema.
 */
export async function runScenarios(ctx: DemoContext): Promise<ScenarioResult[]> {
  await ctx.pool.query(`CREATE SCHEMA IF NOT EXISTS ${ctx.app.sql}`)
  const results: ScenarioResult[] = []
  for (const scenario of SCENARIOS) {
    ctx.say('')
    ctx.say(`== ${scenario.title}`)
    results.push(await scenario.run(ctx))
  }
  return results
}
