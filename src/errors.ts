/**
 * Every error postbox throws on purpose extends {@link PostboxError}, so callers can tell a
 * refused request from a broken connection with one `instanceof`. Each message says what was
 * wrong and what to do about it; a refused call has written nothing.
 *
 * @example
 * try { await postbox.send('emails', payload) }
 * catch (e) { if (e instanceof QueueNotFoundError) await postbox.createQueue('emails') }
 */
export class PostboxError extends Error {
  override name = 'PostboxError'
}

/** The queue does not exist. Create it with `createQueue()` first. */
export class QueueNotFoundError extends PostboxError {
  override name = 'QueueNotFoundError'
  constructor(readonly queue: string, message = `queue '${queue}' does not exist; create it with createQueue()`) {
    super(message)
  }
}

/** A queue name outside `^[a-z0-9][a-z0-9_.:-]{0,62}$`. */
export class InvalidQueueNameError extends PostboxError {
  override name = 'InvalidQueueNameError'
}

/** The queue still holds messages and was not deleted; pass `{ purge: true }` to delete them too. */
export class QueueNotEmptyError extends PostboxError {
  override name = 'QueueNotEmptyError'
}

/** The payload is over the queue's `maxPayloadBytes`. Send a reference to large data instead. */
export class PayloadTooLargeError extends PostboxError {
  override name = 'PayloadTooLargeError'
}

/** A payload that cannot be stored, or that fails its queue's schema; `issues` holds zod's findings. */
export class InvalidPayloadError extends PostboxError {
  override name = 'InvalidPayloadError'
  constructor(message: string, readonly issues: readonly unknown[] = []) {
    super(message)
  }
}

/** An option that makes no sense: a negative delay, an unknown key, a wrong type. */
export class InvalidOptionsError extends PostboxError {
  override name = 'InvalidOptionsError'
}

/**
 * The delivery's lease was lost: it expired and the message was claimed again (or acked by
 * someone else). The newer delivery wins; this one must not ack, nack or extend it.
 */
export class LeaseLostError extends PostboxError {
  override name = 'LeaseLostError'
  constructor(readonly ids: readonly string[]) {
    super(`lease lost for message${ids.length === 1 ? '' : 's'} ${ids.join(', ')}: it expired and was claimed again, or was already completed; extend long work with extend() or a longer visibilityTimeout`)
  }
}

/** The database holds a schema this code cannot use: newer than the code, or an applied file that changed. */
export class MigrationError extends PostboxError {
  override name = 'MigrationError'
}

/**
 * Thrown by a handler to dead-letter its message at once, without further attempts.
 *
 * @example
 * postbox.work('orders', async (m) => { if (!m.payload.sku) throw new NonRetryableError('no sku') })
 */
export class NonRetryableError extends PostboxError {
  override name = 'NonRetryableError'
}

/**
 * No throwaway Postgres could be started for the demo, the tests, the benchmark or
 * `startEmbeddedPostgres()` (the optional dependency is missing, the platform has no binaries,
 * initdb or the server failed). The message is one line that says why and what to do: point
 * `DATABASE_URL` at a Postgres you run. `cause` holds the original error.
 */
export class EmbeddedPostgresError extends PostboxError {
  override name = 'EmbeddedPostgresError'
  constructor(cause: unknown) {
    const reason = (cause instanceof Error ? cause.message : String(cause)).trim().split('\n')[0]
    super(`could not start an embedded Postgres (${reason}); set DATABASE_URL to a Postgres server to use instead`, { cause })
  }
}

/**
 * A routing key outside the topic syntax: 1 to 255 bytes of non-empty words of letters, digits,
 * `_`, `-` and `:`, separated by single dots, with no wildcard (wildcards belong in patterns).
 */
export class InvalidRoutingKeyError extends PostboxError {
  override name = 'InvalidRoutingKeyError'
}

/**
 * A binding pattern outside the topic syntax: the words of a routing key, where a word may also
 * be `*` (exactly one word) or `#` (zero or more words); a wildcard is a whole word (`a.*`, not `a*`).
 */
export class InvalidPatternError extends PostboxError {
  override name = 'InvalidPatternError'
}

/**
 * A header filter that is not an object of header names to a string or a non-empty array of
 * strings, such as `{ region: ['eu', 'us'], tier: 'gold' }`.
 */
export class InvalidFilterError extends PostboxError {
  override name = 'InvalidFilterError'
}

/**
 * A publish with `{ unrouted: 'error' }` matched no binding, so nothing was published (and, in
 * your transaction, the transaction is aborted like after any failed statement). Bind a queue to
 * a pattern that matches the routing key, or publish with the default `unrouted: 'count'`.
 */
export class UnroutableError extends PostboxError {
  override name = 'UnroutableError'
  constructor(readonly routingKey: string, message = `no binding matches routing key '${routingKey}': nothing was published`) {
    super(message)
  }
}

/**
 * A schedule that cannot be read: a cron expression croner refuses (or one that never fires), or
 * a time zone that is not an IANA name Intl knows. Nothing was written.
 */
export class InvalidScheduleError extends PostboxError {
  override name = 'InvalidScheduleError'
}

/** The stream does not exist. Create it with `createStream()` first. */
export class StreamNotFoundError extends PostboxError {
  override name = 'StreamNotFoundError'
  constructor(readonly stream: string, message = `stream '${stream}' does not exist; create it with createStream()`) {
    super(message)
  }
}

/** A stream or consumer group name outside `^[a-z0-9][a-z0-9_.:-]{0,62}$`. */
export class InvalidStreamNameError extends PostboxError {
  override name = 'InvalidStreamNameError'
}

/** The consumer group does not exist on that stream; a group is created by its first `consume()`. */
export class GroupNotFoundError extends PostboxError {
  override name = 'GroupNotFoundError'
}

/**
 * An offset commit was refused because the partition belongs to another member of the group now
 * (or was moved by `seek`): this member was too slow to heartbeat, or the group was rebalanced.
 * The commit's transaction rolls back, the handler's writes with it, and the new owner reads the
 * events again from the last committed offset.
 */
export class StreamFencedError extends PostboxError {
  override name = 'StreamFencedError'
}
