import { describe, expect, it } from 'vitest'
import { terminateBackends } from '../support/backends.js'
import { useTestSchema } from '../support/test-schema.js'
import { waitFor } from '../support/wait-for.js'

// Terminate one Postbox's LISTEN backend seven times in a row: each time the notifier must be
// back within a second. Its reconnect backoff (100 ms doubling to 5 s) is for failed connects;
// a session that had reached LISTEN resets it, or after a handful of losses over a process's
// life every later loss would leave idle workers polling for 5 s (found here, fixed in 0772e93).
const t = useTestSchema()

describe('fault: the LISTEN connection lost again and again', { timeout: 60_000 }, () => {
  it('each lost LISTEN connection is replaced within a second, however many were lost before', async () => {
    const postbox = t.newPostbox()
    let connects = 0
    postbox.on('notifierConnected', () => connects++)
    try {
      await postbox.listen()
      const recoveries: number[] = []
      for (let loss = 1; loss <= 7; loss++) {
        const lostAt = Date.now()
        expect(await terminateBackends(t.pool, `postbox:${t.schema}:listen`)).toBe(1)
        await waitFor('reconnected', () => connects >= loss + 1, { timeoutMs: 10_000, intervalMs: 5 })
        recoveries.push(Date.now() - lostAt)
      }
      console.log(`notifier reconnect after each loss (ms): ${JSON.stringify(recoveries)}`)
      expect(Math.max(...recoveries)).toBeLessThan(1_000)
    } finally {
      await postbox.close()
    }
  })
})
