import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { waitFor } from './wait-for.js'

// Group members in processes of their own (stream-member-process.ts), for fault tests that kill
// them or the server under them, and what their printed events say.

const script = fileURLToPath(new URL('./stream-member-process.ts', import.meta.url))

/** One line a member printed. */
export interface MemberEvent {
  event: string
  partitions?: number[]
  partition?: number
  offset?: string
  id?: string
}

/** A member process. */
export interface Member {
  readonly events: MemberEvent[]
  kill(): void
  readonly exited: Promise<unknown>
  until(match: (events: MemberEvent[]) => boolean): Promise<void>
}

/** Starts a member process with this env (see stream-member-process.ts); resolves once it has joined. */
export async function startMember(env: Record<string, string>): Promise<Member> {
  const child = spawn(process.execPath, ['--import', 'tsx', script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
  const events: MemberEvent[] = []
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      events.push(JSON.parse(line))
    } catch {
      // not an event line
    }
  })
  const exited = new Promise((resolve) => child.once('close', resolve))
  const member: Member = {
    events,
    exited,
    kill: () => void child.kill('SIGKILL'),
    until: async (match) => void (await waitFor('the member process', () => match(events), { timeoutMs: 90_000, intervalMs: 50 })),
  }
  await member.until((e) => e.some((x) => x.event === 'ready'))
  return member
}

/**
 * The effects a member wrote whose offset commit did not follow: the only handlings a fault can
 * repeat, since an event is handled again only when the offset past it was not committed. Read
 * from the member's own events, in order: an effect waits for a commit of its partition at its
 * offset or beyond; it did not get one when the member handles that offset or an earlier one of
 * the partition again first (its batch was read again), loses the partition, or ends. So it
 * includes what failed to commit while connections came back after a fault.
 */
export function uncommittedEffects(member: Member): number {
  const pending = new Map<number, bigint[]>()
  let uncommitted = 0
  const abandon = (partition: number, keep: (offset: bigint) => boolean) => {
    const offsets = pending.get(partition) ?? []
    const kept = offsets.filter(keep)
    uncommitted += offsets.length - kept.length
    pending.set(partition, kept)
  }
  for (const e of member.events) {
    if (e.event === 'revoked') for (const p of e.partitions ?? []) abandon(p, () => false)
    if (e.partition === undefined) continue
    if (e.event === 'fenced') abandon(e.partition, () => false)
    if (e.offset === undefined) continue
    const offset = BigInt(e.offset)
    if (e.event === 'committed') pending.set(e.partition, (pending.get(e.partition) ?? []).filter((o) => o > offset))
    if (e.event === 'effect') {
      abandon(e.partition, (o) => o < offset)
      pending.get(e.partition)?.push(offset)
    }
  }
  for (const offsets of pending.values()) uncommitted += offsets.length
  return uncommitted
}
