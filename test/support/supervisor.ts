import { startChildWorker, type ChildEvent, type ChildWorker } from './child-worker.js'

/**
 * Keeps one worker process running, as systemd or Kubernetes would: when it dies, a new one is
 * started with the same environment. For tests where a message crashes its worker.
 */
export interface Supervisor {
  /** Every process started so far, the current one last. */
  readonly children: readonly ChildWorker[]
  /** Events of every process, in order. */
  events(): ChildEvent[]
  /** Stops respawning and kills the current process. */
  stop(): Promise<void>
}

/**
 * Starts a supervised worker process. `beforeRestart`, if given, runs after a process died and
 * before its replacement starts (a test counts there what the dead process left behind).
 */
export async function superviseChildWorker(env: Record<string, string>, beforeRestart?: (dead: ChildWorker) => Promise<void>): Promise<Supervisor> {
  const children: ChildWorker[] = []
  let running = true
  let respawning: Promise<void> = Promise.resolve()
  const watch = (child: ChildWorker) => {
    void child.exited.then(() => {
      if (!running) return
      respawning = (beforeRestart?.(child) ?? Promise.resolve()).then(() => startChildWorker(env)).then((next) => {
        children.push(next)
        watch(next)
      })
    })
  }
  const first = await startChildWorker(env)
  children.push(first)
  watch(first)
  return {
    children,
    events: () => children.flatMap((c) => c.events),
    stop: async () => {
      running = false
      await respawning.catch(() => {})
      for (const child of children) child.kill('SIGKILL')
      await Promise.all(children.map((c) => c.exited))
    },
  }
}
