import { setTimeout as sleep } from 'node:timers/promises'
import type { DemoContext, ScenarioResult } from './scenario.js'
import { scenarioResult, stopWorkers } from './scenario.js'
import { Tally } from './tally.js'

/** A slow mail provider: each welcome email takes this long to send. */
const EMAIL_MS = 300
/** Time between two sign-ups, so the emails fall behind while sign-ups carry on. */
const SIGNUP_GAP_MS = 80

interface WelcomeEmail {
  userId: string
  to: string
  name: string
}

interface Person {
  name: string
  email: string
  /** Set for a sign-up that fails after its email was queued: the transaction rolls back. */
  failure?: string
}

const PEOPLE: readonly Person[] = [
  { name: 'Ada', email: 'ada@example.com' },
  { name: 'Grace', email: 'grace@example.com' },
  { name: 'Mallory', email: 'mallory@example.com', failure: 'the card was declined' },
  { name: 'Alan', email: 'alan@example.com' },
  { name: 'Barbara', email: 'barbara@example.com' },
  { name: 'Linus', email: 'linus@example.com' },
]

class SignupFailed extends Error {
  constructor(reason: string, readonly messageId: string) {
    super(reason)
  }
}

/**
 * Scenario 1, sign-up sends a welcome email: the user row and the email message are written in
 * one transaction (a pg client in `BEGIN`), so a sign-up that rolls back sends nothing. The email
 * worker is slow, and sign-ups stay fast because they only write a row.
 */
export async function signupScenario(ctx: DemoContext): Promise<ScenarioResult> {
  const { postbox, pool, app, say, signal } = ctx
  say(`   The user row and the welcome email commit in one transaction; the email worker takes ${EMAIL_MS} ms an email.`)
  await pool.query(`CREATE TABLE ${app.sql}.users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL)`)
  await postbox.createQueue('emails', { retention: '1h' })

  const committedAt = new Map<string, number>()
  const tally = new Tally()
  const worker = tally.watch(postbox.work<WelcomeEmail>('emails', async (message, { signal: stop }) => {
    await sleep(EMAIL_MS, undefined, { signal: stop }) // the mail provider, simulated
    const after = Date.now() - (committedAt.get(message.payload.to) ?? Date.now())
    say(`  email    welcome email to ${message.payload.to} sent, ${after} ms after its sign-up committed`)
  }))
  try {
    const latencies: number[] = []
    let rolledBack = 0
    for (const person of PEOPLE) {
      try {
        const { ms, userId, messageId } = await signUp(ctx, person, committedAt)
        latencies.push(ms)
        say(`  sign-up  ${person.email} committed in ${ms.toFixed(1)} ms (user ${userId}, message ${messageId})`)
      } catch (error) {
        if (!(error instanceof SignupFailed)) throw error
        rolledBack++
        await checkRolledBack(ctx, person, error.messageId)
        say(`  sign-up  ${person.email} failed after queueing message ${error.messageId}: ${error.message} -> ROLLBACK`)
        say(`           checked in the database: no user row and no message ${error.messageId}, so no email`)
      }
      await sleep(SIGNUP_GAP_MS, undefined, { signal })
    }
    await tally.until((t) => t.of('emails').completed >= latencies.length, signal, 'the welcome emails')
    const median = [...latencies].sort((a, b) => a - b)[Math.floor(latencies.length / 2)] as number
    const note = `sign-up ${median.toFixed(1)} ms (median) vs ${EMAIL_MS} ms an email; ${rolledBack} rollback, no email`
    say(`  -> sign-ups took ${median.toFixed(1)} ms (median, slowest ${Math.max(...latencies).toFixed(1)} ms); the emails followed at the worker's pace`)
    return await scenarioResult(ctx, 'sign-up welcome email', ['emails'], tally, note)
  } finally {
    await stopWorkers([worker])
  }
}

/** One sign-up: the user row and its welcome email in one transaction. */
async function signUp(ctx: DemoContext, person: Person, committedAt: Map<string, number>) {
  const client = await ctx.pool.connect()
  const started = performance.now()
  try {
    await client.query('BEGIN')
    const { rows } = await client.query<{ id: string }>(
      `INSERT INTO ${ctx.app.sql}.users (email, name) VALUES ($1, $2) RETURNING id`, [person.email, person.name])
    const userId = rows[0]?.id as string
    const email: WelcomeEmail = { userId, to: person.email, name: person.name }
    const { id: messageId } = await ctx.postbox.send('emails', email, { tx: client })
    if (person.failure) throw new SignupFailed(person.failure, messageId)
    committedAt.set(person.email, Date.now())
    await client.query('COMMIT')
    return { ms: performance.now() - started, userId, messageId }
  } catch (error) {
    await client.query('ROLLBACK')
    throw error
  } finally {
    client.release()
  }
}

/** Proves the rolled-back sign-up left nothing behind: no user, and no message to send. */
async function checkRolledBack(ctx: DemoContext, person: Person, messageId: string): Promise<void> {
  const { rows } = await ctx.pool.query<{ users: string; messages: string }>(
    `SELECT (SELECT count(*) FROM ${ctx.app.sql}.users WHERE email = $1) AS users,
            (SELECT count(*) FROM ${ctx.postbox.schema.sql}.messages WHERE id = $2) AS messages`,
    [person.email, messageId],
  )
  if (rows[0]?.users !== '0' || rows[0]?.messages !== '0') {
    throw new Error(`demo: the rolled-back sign-up of ${person.email} left a row behind: ${JSON.stringify(rows[0])}`)
  }
}
