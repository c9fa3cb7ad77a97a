// npx tsx bench/diagnose/flow-interleaved.ts [variant] [rounds]   (PATCH_SQL=<file> as in flow-ab.ts)
// What a limit adds to a claim inside the database, with the machine's drift taken out: on one
// connection, a DO block claims 100 and acks them from the unlimited queue and from the queue of
// `variant` (a flow bench variant, default rateLimit) in turn, 200 times each, each call its own
// transaction, timing each queue's claims+acks apart (clock_timestamp). No client, no contention:
// the bench's ratio measured where a few per cent can be seen (the bench's rounds spread by
// ±0.05 on this VM). Each round refills both queues (interleaved rows) and vacuums. With
// PATCH_SQL a function's next version can be compared with the current one in two runs; which
// queue goes first shifts the ratio by a few per cent, so compare runs of one order.
import { openBenchDb } from '../bench-db.js'
import { LIMIT_VARIANTS } from '../flow-scenarios.js'
import { sqlPatch } from './sql-patch.js'

const variant = process.argv[2] ?? 'rateLimit'
const rounds = Number(process.argv[3] ?? 3)
const options = LIMIT_VARIANTS[variant]
if (!options || variant === 'unlimited') throw new Error(`not a limited variant of the flow bench: ${variant}`)
const db = await openBenchDb()
try {
  if (process.env.PATCH_SQL) await db.sql(sqlPatch(process.env.PATCH_SQL, db.schema))
  await db.postbox.createQueue('interleaved-unlimited', {})
  await db.postbox.createQueue('interleaved-limited', options)
  const c = await db.pool.connect()
  try {
    for (let round = 0; round < rounds; round++) {
      await c.query(
        `INSERT INTO ${db.schema}.messages (queue, payload, headers)
         SELECT q, '{}'::jsonb, jsonb_build_object('postbox-rate-key', 'site-' || (g % 100))
         FROM generate_series(1, 20000) g, unnest(ARRAY['interleaved-limited', 'interleaved-unlimited']) q`)
      await c.query(`VACUUM ANALYZE ${db.schema}.messages`)
      await c.query(`
        DO $$
        DECLARE t0 timestamptz; limited interval := '0'; unlimited interval := '0'; ids bigint[]; leases uuid[];
        BEGIN
          FOR i IN 1..200 LOOP
            t0 := clock_timestamp();
            SELECT array_agg(c.id), array_agg(c.lease) INTO ids, leases FROM ${db.schema}.claim('interleaved-limited', 100) c; COMMIT;
            PERFORM ${db.schema}.ack(ids, leases); COMMIT;
            limited := limited + (clock_timestamp() - t0);
            t0 := clock_timestamp();
            SELECT array_agg(c.id), array_agg(c.lease) INTO ids, leases FROM ${db.schema}.claim('interleaved-unlimited', 100) c; COMMIT;
            PERFORM ${db.schema}.ack(ids, leases); COMMIT;
            unlimited := unlimited + (clock_timestamp() - t0);
          END LOOP;
          PERFORM set_config('interleaved.limited', (extract(epoch FROM limited) * 1e6 / 200)::text, false),
                  set_config('interleaved.unlimited', (extract(epoch FROM unlimited) * 1e6 / 200)::text, false);
        END $$`)
      const { rows } = await c.query<{ limited: number; unlimited: number }>(
        `SELECT current_setting('interleaved.limited')::float8 AS limited, current_setting('interleaved.unlimited')::float8 AS unlimited`)
      const { limited, unlimited } = rows[0]!
      console.log(`round ${round + 1}: ${variant} ${limited.toFixed(0)} µs, unlimited ${unlimited.toFixed(0)} µs a claim of 100 + ack: ${(unlimited / limited).toFixed(2)}x`)
      await c.query(`DELETE FROM ${db.schema}.messages`)
    }
  } finally {
    c.release()
  }
} finally {
  await db.close()
}
