// Runs every example as its own process, against DATABASE_URL or one embedded Postgres started
// for the run, and fails if any exits non-zero or takes too long. It also checks the docs: the
// TypeScript blocks of README.md and docs/ must be excerpts of these examples, and their SQL
// blocks must run against a freshly migrated schema.
//
//   npm run examples
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { cliDatabase } from '../src/cli/database-url.js'
import { checkExcerpts } from './support/doc-excerpts.js'
import { checkDocSql } from './support/doc-sql.js'

const EXAMPLES = ['outbox-kysely.ts', 'http-enqueue.ts', 'worker-sigterm.ts', 'sql-trigger.ts', 'topics.ts', 'observability.ts', 'flow-control.ts', 'schedules.ts', 'streams.ts']
const TIMEOUT_MS = 60_000
const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..')

/** Runs one example with tsx as a loader; resolves with its exit code (or the signal that ended it). */
function run(file: string, env: NodeJS.ProcessEnv): Promise<string | number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(here, file)], { env, stdio: 'inherit', cwd: root })
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      resolve(code ?? signal ?? 'unknown')
    })
  })
}

const docs = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)]
const problems = docs.flatMap((file) => checkExcerpts(root, file, file === 'README.md'))
for (const p of problems) console.error(`${p.file}:${p.line}: code block ${p.problem}`)

const db = await cliDatabase(undefined, true)
const failed: string[] = []
try {
  console.log(db.embedded ? 'examples: on an embedded Postgres' : 'examples: on DATABASE_URL')
  for (const file of EXAMPLES) {
    console.log(`\n== examples/${file}`)
    const started = Date.now()
    const outcome = await run(file, { ...process.env, DATABASE_URL: db.connectionString })
    console.log(`== examples/${file}: ${outcome === 0 ? 'ok' : `FAILED (${outcome})`} in ${Date.now() - started} ms`)
    if (outcome !== 0) failed.push(file)
  }
  console.log('\n== SQL blocks of the docs')
  const sqlProblems = await checkDocSql(db.connectionString, root, docs)
  for (const p of sqlProblems) console.error(`${p.file}:${p.line}: SQL block failed: ${p.error}`)
  if (sqlProblems.length > 0) failed.push(`${sqlProblems.length} SQL blocks in the docs`)
  else console.log('== SQL blocks of the docs: ok')
} finally {
  await db.close()
}
if (problems.length > 0) failed.push(`${problems.length} code blocks in the docs`)
if (failed.length > 0) {
  console.error(`\nexamples failed: ${failed.join(', ')}`)
  process.exitCode = 1
} else {
  console.log(`\nall ${EXAMPLES.length} examples ran; the docs' code blocks match them and their SQL runs`)
}
