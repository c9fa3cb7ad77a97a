export { Postbox, type QueueStats, type PostboxEvents } from './postbox.js'
export { Worker } from './worker/worker.js'
export type { WorkerEvents } from './worker/worker-events.js'
export type { WorkerOptions, StopOptions } from './worker/worker-options.js'
export type { Handler, HandlerContext, TransactionalHandler, TransactionalContext } from './worker/handler.js'
export type { PgClient, PgQueryResult } from './db/pg-client.js'
export type { PostboxOptions } from './postbox-options.js'
export { defineQueue, type QueueDefinition, type QueueRef } from './queue/define-queue.js'
export type { Message, Delivery } from './queue/message.js'
export type { QueueInfo, QueueOptions, RateLimit } from './queue/queue-options.js'
export type { SendOptions, MessageOptions } from './queue/send-options.js'
export type { SendResult, BatchItem } from './queue/producer.js'
export type { ReceiveOptions, NackOptions } from './queue/consumer.js'
export type { TransactionLike } from './db/transaction.js'
export type { Binding, BindOptions } from './routing/binding-admin.js'
export type { HeaderFilter } from './routing/header-filter.js'
export type { PublishOptions, PublishBatchOptions, PublishItem, PublishResult, Unrouted } from './routing/publish-options.js'
export type { UnroutedStats } from './routing/publisher.js'
export type { ScheduleOptions, ScheduleInfo } from './schedule/schedule-options.js'
export type { MissedPolicy } from './schedule/fire-plan.js'
export type { SchedulerHandle } from './schedule/scheduler.js'
export type { MigrateResult } from './migrate/migrator.js'
export type { Logger } from './logger.js'
export type { Duration } from './duration.js'
export {
  PostboxError,
  QueueNotFoundError,
  InvalidQueueNameError,
  QueueNotEmptyError,
  PayloadTooLargeError,
  InvalidPayloadError,
  InvalidOptionsError,
  LeaseLostError,
  MigrationError,
  NonRetryableError,
  InvalidRoutingKeyError,
  InvalidPatternError,
  InvalidFilterError,
  UnroutableError,
  InvalidScheduleError,
  StreamNotFoundError,
  InvalidStreamNameError,
  GroupNotFoundError,
  StreamFencedError,
} from './errors.js'
export type { StreamEvent } from './streams/stream-event.js'
export type { StreamInfo, StreamOptions, AppendOptions, AppendItem, ReadStreamOptions, SeekTo } from './streams/stream-options.js'
export type { AppendResult } from './streams/appender.js'
export type { StreamStats } from './streams/stream-stats.js'
export { StreamConsumer, type StreamConsumerEvents } from './streams/stream-consumer.js'
export type { ConsumeOptions, StreamContext, StreamHandler } from './streams/consume-options.js'
