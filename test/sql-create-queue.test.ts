import { describe, expect, it } from 'vitest'
import { InvalidOptionsError, InvalidQueueNameError, QueueNotFoundError, type QueueOptions } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'

// create_queue() in SQL, for SQL-first users: the same defaults and checks as createQueue(),
// proven by creating each queue both ways and comparing the rows.

const t = useTestSchema()
const S = () => `"${t.schema}"`

/** A queue's settings row, without its name and times. */
async function settings(name: string): Promise<Record<string, unknown> | undefined> {
  const [row] = await t.sql(
    `SELECT extract(epoch FROM visibility_timeout)::float8 AS visibility_timeout_s, max_attempts, backoff_type,
            extract(epoch FROM backoff_base)::float8 AS backoff_base_s, extract(epoch FROM backoff_max)::float8 AS backoff_max_s,
            backoff_jitter, replace(dead_letter, $1, '<name>') AS dead_letter, max_payload_bytes,
            extract(epoch FROM retention)::float8 AS retention_s
     FROM ${S()}.queues WHERE name = $1`, [name])
  return row
}

async function sqlError(text: string, values?: unknown[]): Promise<{ code?: string; message: string; hint?: string }> {
  return t.sql(text, values).then(
    () => ({ message: 'no error' }),
    (e: { code?: string; message: string; hint?: string }) => ({ code: e.code, message: e.message, hint: e.hint }),
  )
}

describe('create_queue() in SQL', () => {
  it('gives the same queue as createQueue(), option by option, and creates the default dead letter', async () => {
    const cases: [QueueOptions, string][] = [
      [{}, ''],
      [{ visibilityTimeout: '45s', maxAttempts: 9 }, `visibility_timeout => '45 seconds', max_attempts => 9`],
      [{ backoff: { type: 'fixed', base: '5s', jitter: false } }, `backoff_type => 'fixed', backoff_base => '5 seconds', backoff_jitter => false`],
      // A max below the base: the base wins, both ways.
      [{ backoff: { base: '2h', max: '1m' } }, `backoff_base => '2 hours', backoff_max => '1 minute'`],
      [{ maxPayloadBytes: 1000, retention: '7d' }, `max_payload_bytes => 1000, retention => '7 days'`],
      [{ deadLetter: false }, `dead_letter => ''`],
    ]
    for (const [i, [options, args]] of cases.entries()) {
      await t.postbox.createQueue(`ts-${i}`, options)
      const [row] = await t.sql<{ name: string }>(`SELECT name FROM ${S()}.create_queue('sql-${i}'${args ? `, ${args}` : ''})`)
      expect(row!.name).toBe(`sql-${i}`)
      const fromSql = await settings(`sql-${i}`)
      expect(fromSql, args).toEqual(await settings(`ts-${i}`))
      if (fromSql!.dead_letter) expect(await settings(`sql-${i}.dead`), args).toEqual(await settings(`ts-${i}.dead`))
    }
    // A queue named like a dead letter gets none by default; a named dead letter is created.
    await t.sql(`SELECT ${S()}.create_queue('parked.dead')`)
    expect((await settings('parked.dead'))!.dead_letter).toBeNull()
    await t.sql(`SELECT ${S()}.create_queue('with-own-dl', dead_letter => 'shared-dl')`)
    expect(await settings('shared-dl')).toMatchObject({ dead_letter: null, max_attempts: 5 })
  })

  it('is idempotent with the same settings and refuses other ones, as createQueue() does', async () => {
    await t.sql(`SELECT ${S()}.create_queue('idem', max_attempts => 7)`)
    await t.sql(`SELECT ${S()}.create_queue('idem', max_attempts => 7)`)
    await t.sql(`SELECT ${S()}.create_queue('idem')`) // settings not given are taken as they are
    await expect(t.postbox.createQueue('idem', { maxAttempts: 7 })).resolves.toMatchObject({ maxAttempts: 7 })
    const refused = await sqlError(`SELECT ${S()}.create_queue('idem', max_attempts => 8, backoff_type => 'fixed')`)
    expect(refused).toMatchObject({ code: 'PBV01', message: `queue 'idem' exists with other settings (max_attempts, backoff_type)` })
    expect(refused.hint).toContain('updateQueue')
    expect((await settings('idem'))!.max_attempts).toBe(7)
  })

  it('refuses bad input with a PB SQLSTATE, which the client types, and creates nothing', async () => {
    const bad: [string, string][] = [
      [`create_queue('Bad Name')`, 'PBQ02'],
      [`create_queue(NULL)`, 'PBQ02'],
      [`create_queue('${'x'.repeat(60)}')`, 'PBQ02'], // too long to derive '<name>.dead'
      [`create_queue('ok', dead_letter => 'Bad')`, 'PBQ02'],
      [`create_queue('ok', dead_letter => 'ok')`, 'PBV01'],
      [`create_queue('ok', visibility_timeout => '0')`, 'PBV01'],
      [`create_queue('ok', max_attempts => 0)`, 'PBV01'],
      [`create_queue('ok', max_attempts => 10001)`, 'PBV01'],
      [`create_queue('ok', backoff_type => 'linear')`, 'PBV01'],
      [`create_queue('ok', backoff_base => '-1 second')`, 'PBV01'],
      [`create_queue('ok', max_payload_bytes => 0)`, 'PBV01'],
      [`create_queue('ok', retention => '-1 day')`, 'PBV01'],
    ]
    for (const [call, code] of bad) expect({ call, code: (await sqlError(`SELECT ${S()}.${call}`)).code }).toEqual({ call, code })
    const [n] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM ${S()}.queues WHERE name IN ('ok', 'ok.dead')`)
    expect(n!.n).toBe(0)
    // Typed on the way out, like every PB error.
    await expect(t.postbox.createQueue('x'.repeat(60))).rejects.toBeInstanceOf(InvalidQueueNameError)
    await expect(t.postbox.createQueue('idem', { maxAttempts: 1 })).rejects.toBeInstanceOf(InvalidOptionsError)
  })

  it('is what the error for a missing queue tells you to run', async () => {
    const missing = await sqlError(`SELECT ${S()}.send('not-yet', '{}')`)
    expect(missing.code).toBe('PBQ01')
    expect(missing.hint).toBe(`Create it first with createQueue(), or in SQL: SELECT ${S()}.create_queue('not-yet');`)
    await expect(t.postbox.send('not-yet', {})).rejects.toBeInstanceOf(QueueNotFoundError)
    await t.sql(missing.hint!.replace(/^.*in SQL: /, ''))
    expect((await t.postbox.send('not-yet', {})).duplicate).toBe(false)
  })
})
