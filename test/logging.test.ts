import { randomBytes } from 'node:crypto'
import { describe, expect, it, vi } from 'vitest'
import type { Logger } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'

// Secrets and payloads never reach the logs: connection strings (with their password), message
// payloads, headers and keys. Every kind of event postbox logs is provoked here, against a
// capturing logger: a lost LISTEN connection, idle pool connections killed, worker errors (its
// queue deleted under it), a server that refuses connections, failing handlers.
const t = useTestSchema()

interface Line {
  level: string
  text: string
}

/** A logger that keeps everything it is given, Errors with their message, stack and properties. */
function capturingLogger(): { logger: Logger; lines: Line[] } {
  const lines: Line[] = []
  const replacer = (_key: string, value: unknown) =>
    value instanceof Error ? { ...value, name: value.name, message: value.message, stack: value.stack, cause: value.cause } : value
  const log = (level: string) => (...args: unknown[]) => void lines.push({ level, text: JSON.stringify(args, replacer) })
  return { logger: { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') }, lines }
}

describe('logs', () => {
  it('never contain the connection string password, payloads, headers or keys', async () => {
    const secret = `pw-${randomBytes(8).toString('hex')}`
    const role = `log_${randomBytes(4).toString('hex')}`
    const marker = `payload-${randomBytes(8).toString('hex')}`
    await t.sql(`CREATE ROLE ${role} LOGIN SUPERUSER PASSWORD '${secret}'`)
    const u = new URL(t.url)
    u.username = role
    u.password = secret
    const url = u.toString()
    const closedPort = new URL(url)
    closedPort.port = '1'
    const { logger, lines } = capturingLogger()
    const postbox = t.newPostbox({ connectionString: url, logger, pollInterval: '100ms' })
    const unreachable = t.newPostbox({ connectionString: closedPort.toString(), logger, pollInterval: '100ms' })
    const console = ['log', 'info', 'warn', 'error', 'debug'].map((m) => vi.spyOn(globalThis.console, m as 'log').mockImplementation(() => {}))
    try {
      await postbox.createQueue('logs', { maxAttempts: 2, backoff: { type: 'fixed', base: '10ms' } })
      const handled: unknown[] = []
      const worker = postbox.work('logs', (m) => {
        handled.push(m.payload)
        if ((m.payload as { fail?: boolean }).fail) throw new Error(`handler failed on ${JSON.stringify(m.payload)}`)
      })
      await postbox.listen()
      await postbox.sendBatch<unknown>('logs', [
        { payload: { marker, fail: true }, headers: { marker }, dedupeKey: marker },
        { payload: { marker }, groupKey: marker },
        { payload: marker },
      ])
      await waitFor('handled', () => handled.length >= 4, { timeoutMs: 10_000 })
      // The LISTEN connection and every other connection of this Postbox, terminated.
      await t.sql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, [role])
      await waitFor('a lost LISTEN connection logged', () => lines.some((l) => l.text.includes('LISTEN connection lost')), { timeoutMs: 5_000 })
      // Its queue deleted under the running worker: claims fail and are logged.
      await t.postbox.deleteQueue('logs', { purge: true })
      await waitFor('a worker error logged', () => lines.some((l) => l.level === 'error'), { timeoutMs: 5_000 })
      // A server that refuses connections: the worker's claims and the notifier fail.
      const doomed = unreachable.work('nowhere', () => {})
      unreachable.listen().catch(() => {})
      await waitFor('connection failures logged', () => lines.filter((l) => l.text.includes('ECONNREFUSED')).length >= 2, { timeoutMs: 5_000 })
      await worker.stop()
      await doomed.stop()
      // postbox wrote nothing to the console by itself.
      for (const spy of console) expect(spy).not.toHaveBeenCalled()
    } finally {
      await postbox.close()
      await unreachable.close()
      for (const spy of console) spy.mockRestore()
      await t.sql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, [role])
      await t.sql(`DROP ROLE ${role}`)
    }
    const levels = new Set(lines.map((l) => l.level))
    expect(levels.has('warn') && levels.has('error')).toBe(true)
    const leaks = lines.filter((l) => l.text.includes(secret) || l.text.includes(marker))
    expect(leaks).toEqual([])
  })
})
