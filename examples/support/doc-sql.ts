import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { Postbox } from '../../src/index.js'

/** A SQL block of the docs that failed against the schema. */
export interface SqlProblem {
  readonly file: string
  readonly line: number
  readonly error: string
}

/** A block preceded by this comment is not run (it needs something the check cannot provide). */
const SKIP = '<!-- sql: not run'

/**
 * Runs every SQL code block of the given Markdown files against a freshly migrated schema that
 * holds messages in every state (ready, delayed, in flight, retrying, dead, archived), each block
 * in a transaction that is rolled back. The docs write the schema as `postbox`; here it is a
 * schema of the check's own, dropped at the end. Returns the blocks that failed.
 */
export async function checkDocSql(connectionString: string, root: string, files: readonly string[]): Promise<SqlProblem[]> {
  const schema = `docs_sql_${randomBytes(4).toString('hex')}`
  const postbox = new Postbox({ connectionString, schema })
  const client = new pg.Client({ connectionString })
  await client.connect()
  const problems: SqlProblem[] = []
  try {
    await postbox.migrate()
    await fillQueues(postbox)
    for (const file of files) {
      for (const block of sqlBlocks(readFileSync(join(root, file), 'utf8'))) {
        const sql = block.sql.replace(/\bpostbox(?=\.|')/g, schema)
        await client.query('BEGIN')
        try {
          await client.query(sql)
        } catch (error) {
          problems.push({ file, line: block.line, error: (error as Error).message })
        } finally {
          await client.query('ROLLBACK')
        }
      }
    }
  } finally {
    await postbox.close()
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
    await client.end()
  }
  return problems
}

/** Messages in every state the docs' queries look at. */
async function fillQueues(postbox: Postbox): Promise<void> {
  await postbox.createQueue('emails', { retention: '1h', maxAttempts: 3 })
  await postbox.send('emails', { to: 'ada@example.com' }, { dedupeKey: 'welcome:42', headers: { traceparent: '00-abc-def-01' } })
  await postbox.send('emails', 'a text payload')
  await postbox.send('emails', Buffer.from([0, 1, 2]))
  await postbox.send('emails', { to: 'later@example.com' }, { delay: '1h' })
  const [acked, retried, dead] = await postbox.receive('emails', { max: 3 })
  if (!acked || !retried || !dead) throw new Error('docs sql check: expected three messages')
  await postbox.ack(acked)
  await postbox.nack(retried, { error: new Error('smtp timeout') })
  await postbox.nack(dead, { error: new Error('bad address'), deadLetter: true })
  await postbox.send('emails', { to: 'grace@example.com' })
  await postbox.receive('emails') // stays in flight
}

function sqlBlocks(markdown: string): { line: number; sql: string }[] {
  const lines = markdown.split('\n')
  const blocks: { line: number; sql: string }[] = []
  for (let i = 0; i < lines.length; i++) {
    if ((lines[i] as string).trim() !== '```sql') continue
    const start = i
    const body: string[] = []
    while (++i < lines.length && !(lines[i] as string).trim().startsWith('```')) body.push(lines[i] as string)
    const before = lines.slice(0, start).reverse().find((line) => line.trim() !== '') ?? ''
    if (!before.startsWith(SKIP)) blocks.push({ line: start + 1, sql: body.join('\n') })
  }
  return blocks
}
