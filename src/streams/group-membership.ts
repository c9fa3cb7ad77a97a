import { sleep, type BackgroundService } from '../background-loop.js'
import type { Executor } from '../db/executor.js'
import * as g from '../queries/streams-groups.js'
import type { SchemaName } from '../schema-name.js'
import { stamp } from './stream-reader.js'

/** A partition a member owns: the epoch its commits are fenced by, and how far it has read. */
export interface OwnedPartition {
  readonly partition: number
  readonly epoch: string
  /** The offset of the last event processed and committed. */
  position: string
  /** While a handler error waits for its retry: when the partition may be read again (local time). */
  retryAt: number
  /** Consecutive handler failures, for the retry backoff. */
  failures: number
}

/** What the membership tells the consumer, and asks of it. */
export interface MembershipHooks {
  /** Partitions were assigned to or taken from this member. */
  changed(assigned: number[], revoked: number[]): void
  /** Resolves once no batch of these partitions is being processed (they are about to be released). */
  quiesce(partitions: readonly number[]): Promise<void>
  report(error: unknown): void
}

/** How the membership reaches the database and what it is. */
export interface MembershipOptions {
  readonly db: Executor
  readonly schema: SchemaName
  readonly stream: string
  readonly group: string
  readonly member: string
  readonly sessionTimeoutMs: number
  readonly heartbeatMs: number
  readonly from: 'earliest' | 'latest'
}

/** Streams' retention is applied by running members about this often (prune_streams). */
const PRUNE_EVERY_MS = 60_000

/**
 * A member of a consumer group: heartbeats every `heartbeatMs` (stream_rebalance), which keeps it
 * alive, frees the partitions of members whose session ran out and takes this member's share of
 * the free ones. A member above its share (others joined) first waits for its batches of the
 * excess partitions to finish, then releases them, so a rebalance moves no batch mid-way
 * (cooperative, as Kafka's CooperativeSticky). A member that cannot heartbeat for a whole session
 * drops its partitions locally: others own them by then, and its commits would be fenced anyway.
 * Stopping releases every partition and leaves the group, so the others take them over at their
 * next heartbeat instead of after the session timeout.
 */
export class GroupMembership implements BackgroundService {
  /** The partitions this member owns now, by partition. */
  readonly owned = new Map<number, OwnedPartition>()
  private readonly stopped = new AbortController()
  private loop: Promise<void> | undefined
  private lastHeartbeat = Date.now()
  private lastPrune = Date.now()
  private firstHeartbeat: Promise<void> | undefined

  constructor(
    private readonly o: MembershipOptions,
    private readonly hooks: MembershipHooks,
  ) {}

  start(): void {
    this.loop ??= this.run()
  }

  /** Resolves after the first heartbeat (whatever its outcome). */
  ready(): Promise<void> {
    return this.firstHeartbeat ?? Promise.resolve()
  }

  /** Forgets a partition whose commit was fenced: another member owns it now. */
  drop(partition: number): void {
    if (this.owned.delete(partition)) this.hooks.changed([], [partition])
  }

  /** Stops heartbeating, releases every partition and leaves the group. Idempotent; never throws. */
  async stop(): Promise<void> {
    if (!this.stopped.signal.aborted) this.stopped.abort()
    await this.loop
    const revoked = [...this.owned.keys()]
    this.owned.clear()
    if (revoked.length > 0) this.hooks.changed([], revoked)
    await g.release(this.o.db, this.o.schema, { stream: this.o.stream, group: this.o.group, member: this.o.member, partitions: null, leave: true })
      .catch((error: unknown) => this.hooks.report(error))
  }

  private async run(): Promise<void> {
    const { signal } = this.stopped
    // 'latest' means after every event committed before the group exists, stamped or not yet.
    const stamped = this.o.from === 'latest' ? stamp(this.o.db, this.o.schema, this.o.stream).catch(() => {}) : Promise.resolve()
    this.firstHeartbeat = stamped.then(() => this.heartbeat())
    await this.firstHeartbeat
    while (!signal.aborted) {
      await sleep(this.o.heartbeatMs, signal)
      if (signal.aborted) break
      await this.heartbeat()
      if (Date.now() - this.lastPrune > PRUNE_EVERY_MS) {
        this.lastPrune = Date.now()
        await g.pruneStreams(this.o.db, this.o.schema, null).catch((error: unknown) => this.hooks.report(error))
      }
    }
  }

  /** One heartbeat: rebalance, then release what is above this member's share. */
  async heartbeat(): Promise<void> {
    let rows: g.OwnedRow[]
    try {
      rows = await g.rebalance(this.o.db, this.o.schema, {
        stream: this.o.stream,
        group: this.o.group,
        member: this.o.member,
        sessionTimeoutMs: this.o.sessionTimeoutMs,
        from: this.o.from,
      })
      this.lastHeartbeat = Date.now()
    } catch (error) {
      this.hooks.report(error)
      if (Date.now() - this.lastHeartbeat > this.o.sessionTimeoutMs && this.owned.size > 0) {
        const revoked = [...this.owned.keys()]
        this.owned.clear()
        this.hooks.changed([], revoked)
      }
      return
    }
    // Beyond its share (others joined), the member keeps its lowest partitions and gives the rest back.
    const share = rows[0]?.share ?? 0
    const kept = rows.slice(0, share)
    const excess = rows.slice(share).map((r) => r.partition)
    const assigned: number[] = []
    const revoked: number[] = []
    const keep = new Set(kept.map((r) => r.partition))
    for (const partition of this.owned.keys()) {
      if (!keep.has(partition)) {
        this.owned.delete(partition)
        revoked.push(partition)
      }
    }
    for (const row of kept) {
      const had = this.owned.get(row.partition)
      if (had && had.epoch === row.epoch) continue
      if (had) revoked.push(row.partition)
      this.owned.set(row.partition, { partition: row.partition, epoch: row.epoch, position: row.committed_offset, retryAt: 0, failures: 0 })
      assigned.push(row.partition)
    }
    if (assigned.length > 0 || revoked.length > 0) this.hooks.changed(assigned, revoked)
    if (excess.length > 0) {
      await this.hooks.quiesce(excess)
      await g.release(this.o.db, this.o.schema, { stream: this.o.stream, group: this.o.group, member: this.o.member, partitions: excess, leave: false })
        .catch((error: unknown) => this.hooks.report(error))
    }
  }
}
