// npm run package-check: postbox as a user installs it. Packs the package, installs the tarball
// into a throwaway project outside the repository (its dependencies come from the registry), and
// there: compiles a strict ESM TypeScript app and a CommonJS TypeScript file with skipLibCheck off
// (test/package/app/), loads the package with require() from CommonJS, runs the app (sends and a
// transactional worker) against DATABASE_URL or an embedded Postgres, and runs `npx postbox
// --help` and `npx postbox migrate --print`. Exits non-zero at the first failure.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { cliDatabase } from '../../src/cli/database-url.js'

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..', '..')
/** What the tarball may hold: what runs, and the files npm always adds. */
const SHIPPED = /^(dist\/|migrations\/|package\.json$|README\.md$|LICENSE)/
const started = Date.now()

function step(what: string): void {
  console.log(`\n== package-check: ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`)
}

/** Runs a command; returns its stdout, or throws with its output when it exits non-zero. */
function run(command: string, args: readonly string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): string {
  const result = spawnSync(command, args, { cwd: options.cwd, env: options.env ?? process.env, encoding: 'utf8', timeout: 180_000 })
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed (${result.error?.message ?? `exit ${result.status ?? result.signal}`}):\n${result.stdout}${result.stderr}`)
  }
  return result.stdout
}

const work = mkdtempSync(join(tmpdir(), 'postbox-package-check-'))
const app = join(work, 'app')
const db = await cliDatabase(undefined, true)
const schema = `pkgcheck_${randomBytes(4).toString('hex')}`
const admin = new pg.Client({ connectionString: db.connectionString })
let failed = false
try {
  step('npm pack (builds first)')
  const [packed] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', work], { cwd: root })) as {
    filename: string
    size: number
    unpackedSize: number
    files: { path: string }[]
  }[]
  if (!packed) throw new Error('npm pack reported no tarball')
  const strays = packed.files.map((f) => f.path).filter((path) => !SHIPPED.test(path))
  if (strays.length > 0) throw new Error(`the tarball ships files that do not run: ${strays.join(', ')}`)
  console.log(`${packed.filename}: ${(packed.size / 1024).toFixed(1)} kB packed, ${(packed.unpackedSize / 1024).toFixed(1)} kB unpacked, ${packed.files.length} files`)

  step(`install into ${app}`)
  cpSync(join(here, 'app'), app, { recursive: true })
  const typescript = (JSON.parse(readFileSync(join(root, 'node_modules', 'typescript', 'package.json'), 'utf8')) as { version: string }).version
  run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', join(work, packed.filename), `typescript@${typescript}`], { cwd: app })

  step(`tsc --strict, skipLibCheck off (TypeScript ${typescript}): ESM app and CommonJS file`)
  run('npx', ['tsc', '-p', '.'], { cwd: app })

  step('require() from CommonJS')
  console.log(run('node', ['require.cjs'], { cwd: app }).trim())
  console.log(run('node', ['out/typed-require.cjs'], { cwd: app }).trim())

  step(`the app against ${db.embedded ? 'an embedded Postgres' : 'DATABASE_URL'}: sends and a transactional worker`)
  await admin.connect()
  const table = `${schema}_app.welcomes`
  await admin.query(`CREATE SCHEMA ${schema}_app; CREATE TABLE ${table} (message_id bigint PRIMARY KEY, email text NOT NULL)`)
  const env = { ...process.env, DATABASE_URL: db.connectionString, POSTBOX_SCHEMA: schema, APP_TABLE: table }
  console.log(run('node', ['out/app.js'], { cwd: app, env }).trim())
  const { rows } = await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)
  if (rows[0]?.n !== 3) throw new Error(`the worker's transactions wrote ${rows[0]?.n} rows, not 3`)

  step('npx postbox --help, npx postbox migrate --print')
  if (!run('npx', ['postbox', '--help'], { cwd: app }).includes('Usage: postbox')) throw new Error('postbox --help printed no usage')
  if (!run('npx', ['postbox', 'migrate', '--print'], { cwd: app }).includes('CREATE TABLE')) throw new Error('postbox migrate --print printed no schema')
  console.log('both ran')
} catch (error) {
  failed = true
  console.error(`\npackage-check FAILED: ${(error as Error).message}`)
} finally {
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE; DROP SCHEMA IF EXISTS ${schema}_app CASCADE`).catch(() => {})
  await admin.end().catch(() => {})
  await db.close()
  rmSync(work, { recursive: true, force: true })
}
console.log(failed ? '' : `\npackage-check: ok in ${((Date.now() - started) / 1000).toFixed(1)} s`)
process.exitCode = failed ? 1 : 0
