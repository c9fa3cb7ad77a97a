// npx tsx bench/diagnose/flow-calls.ts [calls]   (PATCH_SQL=<file> as in flow-ab.ts)
//   VARIANTS=a,b: only those variants; TAKES=flow_take,flow_take_old: time each of these functions
//   (same arguments; one defined by PATCH_SQL, say), in turn, three times: A/B on one server
// What flow_gate and flow_take cost a call by themselves, per variant of the flow bench: each
// called `calls` times in a loop inside one DO block on one connection, each call its own
// transaction (ids of 100 messages that exist, with their rate keys as the claim's scan passes
// them; none claimed, so a slot row drops them when it looks), timed by clock_timestamp(). One
// connection, no contention: the fixed price a claim of a limited queue pays on top of an
// unlimited one.
import { openBenchDb } from '../bench-db.js'
import { LIMIT_VARIANTS } from '../flow-scenarios.js'
import { sqlPatch } from './sql-patch.js'

const calls = Number(process.argv[2] ?? 2000)
const db = await openBenchDb()
try {
  if (process.env.PATCH_SQL) await db.sql(sqlPatch(process.env.PATCH_SQL, db.schema))
  const c = await db.pool.connect()
  try {
    const takes = (process.env.TAKES ?? '').split(',').filter(Boolean)
    for (const fn of takes) if (!/^[a-z_][a-z0-9_]*$/.test(fn)) throw new Error(`TAKES: not a function name: ${fn}`)
    for (const [variant, options] of Object.entries(LIMIT_VARIANTS)) {
      if (process.env.VARIANTS && !process.env.VARIANTS.split(',').includes(variant)) continue
      const queue = `calls-${variant.toLowerCase()}`
      await db.postbox.createQueue(queue, options)
      await db.sql(
        `INSERT INTO ${db.schema}.messages (queue, payload, headers)
         SELECT $1, '{}'::jsonb, jsonb_build_object('postbox-rate-key', 'site-' || (g % 100)) FROM generate_series(1, 100) g`, [queue])
      for (const fn of takes.length > 0 ? [...takes, ...takes, ...takes] : ['flow_gate', 'flow_take']) {
        const call = fn === 'flow_gate' ? `PERFORM ${db.schema}.flow_gate(q, 100)` : `PERFORM ${db.schema}.${fn}(q, ids, rate_keys, gen_random_uuid())`
        await c.query(`SELECT set_config('flow_calls.q', $1, false)`, [queue])
        await c.query(`
          DO $$
          DECLARE q text := current_setting('flow_calls.q'); ids bigint[]; rate_keys text[]; t0 timestamptz;
          BEGIN
            SELECT array_agg(id ORDER BY id), array_agg(headers ->> 'postbox-rate-key' ORDER BY id) INTO ids, rate_keys
            FROM ${db.schema}.messages WHERE queue = q;
            t0 := clock_timestamp();
            FOR i IN 1..${calls} LOOP ${call}; COMMIT; END LOOP;
            PERFORM set_config('flow_calls.us', (extract(epoch FROM clock_timestamp() - t0) * 1e6 / ${calls})::text, false);
          END $$`)
        const { rows } = await c.query<{ us: number }>(`SELECT current_setting('flow_calls.us')::float8 AS us`)
        console.log(`${variant.padEnd(14)} ${fn.padEnd(10)} ${rows[0]!.us.toFixed(1).padStart(8)} µs a call`)
      }
    }
  } finally {
    c.release()
  }
} finally {
  await db.close()
}
