import type pg from 'pg'
import { poolDatabase } from '../../src/db/database.js'
import { withTypedErrors } from '../../src/db/typed-errors.js'
import { silentLogger } from '../../src/logger.js'
import { Scheduler } from '../../src/schedule/scheduler.js'
import { schemaName } from '../../src/schema-name.js'

/**
 * A scheduler on a test's pool that the test drives itself: `tick(now)` fires what is due at the
 * instant the test gives, so missed ticks and daylight-saving days are tested without waiting.
 */
export function testScheduler(pool: pg.Pool, schema: string): Scheduler {
  const db = poolDatabase(pool)
  const typed = withTypedErrors(db)
  return new Scheduler({ query: typed.query, transaction: (fn) => db.transaction((tx, handle) => fn(withTypedErrors(tx), handle)) }, schemaName(schema), silentLogger)
}
