import type { QueueOptions } from '../src/index.js'
import type { BenchDb } from './bench-db.js'
import { CONCURRENCY } from './bench-db.js'
import { drain, progress } from './measure.js'

// Flow control (DESIGN.md, "rate limits" and issue 15): what the limits cost a claim when they
// are not reached, and how much of an allowed rate a fleet uses when they are.

const PAYLOAD = { url: 'https://shop.example/products/0001' }
const KEYS = 100

/** The variants of the claim round, each a queue of its own; the unlimited one is the baseline. */
export const LIMIT_VARIANTS: Record<string, QueueOptions> = {
  unlimited: {},
  maxInFlight: { maxInFlight: 1_000_000 },
  rateLimit: { rateLimit: { limit: 1_000_000_000, per: '1s' } },
  keyRateLimit: { keyRateLimit: { limit: 1_000_000, per: '1s' } },
}

/**
 * Claim throughput (receive 100 + ack, 10 callers) of queues whose limits are far from reached,
 * against the same queue without limits: `take` messages, every one with a rate key (one of 100),
 * per round; the variants take turns, each round from a refilled, vacuumed table. Medians of
 * `rounds` rounds, by variant.
 */
export async function limitedClaimRounds(db: BenchDb, take = 10_000, rounds = 5): Promise<Record<string, number>> {
  const rates = new Map<string, number[]>(Object.keys(LIMIT_VARIANTS).map((v) => [v, []]))
  for (const [variant, options] of Object.entries(LIMIT_VARIANTS)) await db.postbox.createQueue(`bench-flow-${variant.toLowerCase()}`, options)
  const variants = Object.keys(LIMIT_VARIANTS)
  for (let round = 0; round < rounds + 1; round++) {
    // Each variant goes first in turn; round 0 warms up and is not counted.
    for (const variant of [...variants.slice(round % variants.length), ...variants.slice(0, round % variants.length)]) {
      const queue = `bench-flow-${variant.toLowerCase()}`
      await db.sql(
        `INSERT INTO ${db.schema}.messages (queue, payload, headers)
         SELECT $1, $2::jsonb, jsonb_build_object('postbox-rate-key', 'site-' || (g % $4)) FROM generate_series(1, $3) g`,
        [queue, JSON.stringify(PAYLOAD), take, KEYS],
      )
      await db.sql(`VACUUM ANALYZE ${db.schema}.messages`)
      await db.sql('CHECKPOINT').catch(() => {})
      const rate = await drain(CONCURRENCY, async () => {
        const messages = await db.postbox.receive(queue, { max: 100 })
        if (messages.length > 0) await db.postbox.ack(messages)
        return messages.length
      })
      if (round > 0) rates.get(variant)?.push(rate)
      progress(`  round ${round}${round === 0 ? ' (warm-up)' : ''}: ${variant} ${Math.round(rate)} msg/s`)
    }
  }
  return Object.fromEntries([...rates].map(([variant, list]) => [variant, median(list)]))
}

/**
 * A fleet at a per-key limit: `keys` keys at `perSecond` claims a second each, a worker of
 * concurrency 50 with a no-op handler, a backlog that outlasts the run. Returns the share of the
 * allowed rate used from the first second on (claims counted by their database time), and the
 * most claims of one key in any second, which must not pass the limit.
 */
export async function keyRateUtilisation(db: BenchDb, keys = 1_000, perSecond = 2, seconds = 5): Promise<{ used: number; busiestSecond: number; claims: number }> {
  const queue = 'bench-flow-keys'
  await db.postbox.createQueue(queue, { keyRateLimit: { limit: perSecond, per: '1s' } })
  const perKey = perSecond * (seconds + 3)
  await db.sql(
    `INSERT INTO ${db.schema}.messages (queue, payload, headers)
     SELECT $1, $2::jsonb, jsonb_build_object('postbox-rate-key', 'site-' || (g % $4)) FROM generate_series(1, $3) g`,
    [queue, JSON.stringify(PAYLOAD), keys * perKey, keys],
  )
  await db.sql(`VACUUM ANALYZE ${db.schema}.messages`)
  const claims: { key: string; at: number }[] = []
  const worker = db.postbox.work(queue, (m) => void claims.push({ key: m.headers['postbox-rate-key'] as string, at: m.claimedAt.getTime() }), { concurrency: 50 })
  await new Promise((resolve) => setTimeout(resolve, (seconds + 1.5) * 1000))
  await worker.stop()
  const t0 = Math.min(...claims.map((c) => c.at))
  const from = t0 + 1000
  const to = from + seconds * 1000
  const counted = claims.filter((c) => c.at >= from && c.at < to).length
  const byKey = new Map<string, number[]>()
  for (const c of claims) byKey.set(c.key, [...(byKey.get(c.key) ?? []), c.at])
  let busiest = 0
  for (const times of byKey.values()) {
    times.sort((a, b) => a - b)
    for (let i = 0, j = 0; i < times.length; i++) {
      while ((times[j] as number) <= (times[i] as number) - 1000) j++
      busiest = Math.max(busiest, i - j + 1)
    }
  }
  await db.sql(`DELETE FROM ${db.schema}.messages WHERE queue = $1`, [queue])
  return { used: counted / (keys * perSecond * seconds), busiestSecond: busiest, claims: claims.length }
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] as number
}
