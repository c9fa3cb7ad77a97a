import pg from 'pg'
import { Postbox } from '../postbox.js'
import { schemaName } from '../schema-name.js'
import { cliDatabase } from './database-url.js'
import { handleInterrupts } from './interrupts.js'
import { printOperatorSql } from './demo/operator-sql.js'
import type { ScenarioResult } from './demo/scenario.js'
import { runScenarios } from './demo/scenarios.js'
import { summaryLines } from './demo/summary.js'
import { dropDemoSchema, uniqueDemoSchema } from './demo-schema.js'

/** Options of {@link runDemo}. */
export interface DemoOptions {
  /** Where progress lines go; default stdout. */
  say?: (line: string) => void
}

/** What a demo run did. */
export interface DemoReport {
  /** The postbox schema it used (dropped again when the database was not its own). */
  readonly schema: string
  /** The app schema of the scenarios' business tables (dropped likewise). */
  readonly appSchema: string
  readonly results: readonly ScenarioResult[]
  /** True when Ctrl-C (or SIGTERM) cut the run short. */
  readonly interrupted: boolean
}

/**
 * The demo: on an embedded Postgres (or `url`/`DATABASE_URL`, in a schema of its own that is
 * dropped at the end), migrates, runs the five scenarios with live progress, prints the summary
 * table and the SQL an operator would run with its output. Ctrl-C stops the workers, closes
 * everything and stops the embedded Postgres; the exit code is then 130.
 *
 * @example
 * await runDemo(process.env.DATABASE_URL)
 */
export async function runDemo(url: string | undefined, options: DemoOptions = {}): Promise<DemoReport> {
  const say = options.say ?? ((line: string) => console.log(line))
  const started = Date.now()
  const interrupt = new AbortController()
  const stopHandling = handleInterrupts((signal) => {
    say(`\n${signal === 'SIGINT' ? 'Ctrl-C' : signal}: stopping the workers and cleaning up (press Ctrl-C again to quit at once)`)
    interrupt.abort(new Error('demo interrupted'))
  })
  const schema = schemaName(uniqueDemoSchema())
  const app = schemaName(`${schema.name}_app`)
  const report = { schema: schema.name, appSchema: app.name, results: [] as ScenarioResult[], interrupted: false }
  try {
    const db = await cliDatabase(url, true)
    say(db.embedded ? 'started an embedded Postgres for this demo' : `using ${url ? '--url' : 'DATABASE_URL'}, in schema ${schema.name}`)
    const postbox = new Postbox({ connectionString: db.connectionString, schema: schema.name })
    const pool = new pg.Pool({ connectionString: db.connectionString, max: 5 })
    pool.on('error', () => {}) // an idle client lost to a server shutdown is replaced, not fatal
    try {
      interrupt.signal.throwIfAborted()
      const migrated = await postbox.migrate()
      say(`migrated schema ${schema.name} to version ${migrated.version}`)
      report.results = await runScenarios({ postbox, pool, app, say, signal: interrupt.signal })
      say('')
      say('== Summary (sent: counted in the database; handled, retried, dead-lettered: worker events)')
      for (const line of summaryLines(report.results)) say(line)
      say('')
      say('== What an operator runs to look inside (psql, or any SQL client)')
      await printOperatorSql(pool, schema, say)
    } catch (error) {
      if (!interrupt.signal.aborted) throw error
      report.interrupted = true
    } finally {
      await postbox.close()
      await pool.end().catch(() => {})
      if (!db.embedded) {
        try {
          await dropDemoSchema(db.connectionString, app.name)
          await dropDemoSchema(db.connectionString, schema.name)
          say(`dropped schemas ${schema.name} and ${app.name}`)
        } catch (error) {
          // Reported, not thrown: an error of the run itself (already on its way) matters more.
          say(`could not drop schemas ${schema.name} and ${app.name}: ${(error as Error).message}`)
        }
      }
      await db.close()
    }
  } catch (error) {
    if (!interrupt.signal.aborted) throw error
    report.interrupted = true
  } finally {
    stopHandling()
  }
  if (report.interrupted) {
    say('interrupted: workers stopped, connections closed, nothing left running')
    process.exitCode = 130
  } else {
    say(`done in ${((Date.now() - started) / 1000).toFixed(1)}s`)
  }
  return report
}
