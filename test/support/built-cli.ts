import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'

const MAIN = new URL('../../dist/cli/main.js', import.meta.url).pathname

/** What a finished CLI run printed, and its exit code. */
export interface CliRun {
  code: number
  stdout: string
  stderr: string
}

/** The environment of a CLI run: this process's, without DATABASE_URL unless given. */
function environment(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const base = { ...process.env }
  delete base.DATABASE_URL
  return { ...base, ...env }
}

/** Runs the built CLI (`node dist/cli/main.js ...args`) to its end. */
export function runCli(args: readonly string[], env: Record<string, string | undefined> = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { env: environment(env), timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

/** A CLI process that keeps running (`stats --watch`, `dashboard`), with its output so far. */
export interface RunningCli {
  readonly child: ChildProcessWithoutNullStreams
  stdout(): string
  stderr(): string
  /** Resolves with the first match of `pattern` in stdout; rejects if the process ends first. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>
  /** Sends a signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>
  /** Resolves with the exit code when the process ends by itself. */
  exited(): Promise<number | null>
}

/** Starts the built CLI in the background. */
export function startCli(args: readonly string[], env: Record<string, string | undefined> = {}): RunningCli {
  const child = spawn(process.execPath, [MAIN, ...args], { env: environment(env) })
  let out = ''
  let err = ''
  const listeners = new Set<() => void>()
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString()
    for (const l of listeners) l()
  })
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()))
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    waitForOutput(pattern, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = out.match(pattern)
          if (!match) return
          done()
          resolve(match)
        }
        const timer = setTimeout(() => {
          done()
          reject(new Error(`no ${pattern} in the CLI's output after ${timeoutMs} ms; stdout: ${out} stderr: ${err}`))
        }, timeoutMs)
        const ended = () => {
          done()
          reject(new Error(`the CLI exited before printing ${pattern}; stdout: ${out} stderr: ${err}`))
        }
        const done = () => {
          clearTimeout(timer)
          listeners.delete(check)
          child.off('exit', ended)
        }
        listeners.add(check)
        child.once('exit', ended)
        check()
      })
    },
    async stop(signal = 'SIGINT') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exit
    },
    exited: () => exit,
  }
}
