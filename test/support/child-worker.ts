import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

/** One event line printed by test/support/worker-process.ts. */
export interface ChildEvent {
  event: string
  id?: string
  attempt?: number
  message?: string
}

/** A worker running in another process, and the events it has printed so far. */
export interface ChildWorker {
  readonly process: ChildProcess
  readonly events: ChildEvent[]
  /** Resolves with the first event (seen or future) that matches. */
  next(match: (e: ChildEvent) => boolean, timeoutMs?: number): Promise<ChildEvent>
  kill(signal?: NodeJS.Signals): void
  /** Resolves when the process has exited and every line it printed has been read. */
  exited: Promise<number | null>
}

const script = fileURLToPath(new URL('./worker-process.ts', import.meta.url))

/** Starts a worker process and waits until it is listening. */
export async function startChildWorker(env: Record<string, string>): Promise<ChildWorker> {
  // node itself with tsx as a loader (not the tsx CLI, which would put a second process between
  // the test's signals and the worker).
  const child = spawn(process.execPath, ['--import', 'tsx', script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
  const events: ChildEvent[] = []
  const waiters = new Set<() => void>()
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    try {
      events.push(JSON.parse(line) as ChildEvent)
    } catch {
      return
    }
    for (const wake of [...waiters]) wake()
  })
  // 'close' comes after 'exit' once stdout is drained, so `events` then holds everything printed.
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)))
  const worker: ChildWorker = {
    process: child,
    events,
    exited,
    kill: (signal = 'SIGKILL') => void child.kill(signal),
    next: (match, timeoutMs = 15_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = events.find(match)
          if (!found) return
          waiters.delete(check)
          clearTimeout(timer)
          resolve(found)
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`child worker: no matching event within ${timeoutMs} ms; saw ${JSON.stringify(events)}`))
        }, timeoutMs)
        waiters.add(check)
        check()
      }),
  }
  // Generous: tsx compiles the worker on start, which took over 30 s on a 2-core machine shared with other builds.
  await worker.next((e) => e.event === 'ready', 90_000)
  return worker
}
