import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { afterAll, describe, expect, it } from 'vitest'
import type { Message } from '../src/index.js'
import { tracerProviderRegistered } from '../src/tracing/sdk-registered.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'

const t = useTestSchema()
const exporter = new InMemorySpanExporter()

/** Registers the real OpenTelemetry SDK as an app would: tracer provider, context manager, W3C propagator. */
function registerSdk(): void {
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  trace.setGlobalTracerProvider(provider)
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
}

afterAll(() => {
  trace.disable()
  context.disable()
  propagation.disable()
})

/** Runs one worker over a queue until `count` messages were handled; returns what the handler saw. */
async function consume(queue: string, count: number, handler: (m: Message) => void = () => {}): Promise<Message[]> {
  const seen: Message[] = []
  const worker = t.postbox.work(queue, (m) => {
    seen.push(m)
    handler(m)
  }, { concurrency: 2 })
  try {
    await waitFor(`${count} messages handled`, () => seen.length >= count && worker.inFlight === 0, { timeoutMs: 10_000 })
  } finally {
    await worker.stop()
  }
  return seen
}

const spanId = (s: ReadableSpan) => s.spanContext().spanId

// The order matters: first without an SDK (the default), then with one registered.
describe('without an OpenTelemetry SDK', () => {
  it('adds no headers and makes no spans', async () => {
    expect(tracerProviderRegistered()).toBe(false)
    await t.postbox.createQueue('tr-off')
    await t.postbox.send('tr-off', { n: 1 }, { headers: { tenant: 'a' } })
    await t.postbox.sendBatch('tr-off', [{ n: 2 }])
    const seen = await consume('tr-off', 2)
    expect(seen.map((m) => m.headers)).toEqual([{ tenant: 'a' }, {}])
    expect(exporter.getFinishedSpans()).toEqual([])
  })
})

describe('with the OpenTelemetry SDK', () => {
  it('carries the sender\'s trace context to a consumer span whose parent is the producer span', async () => {
    registerSdk()
    expect(tracerProviderRegistered()).toBe(true)
    await t.postbox.createQueue('tr-on')
    const tracer = trace.getTracer('test')
    const producer = tracer.startSpan('checkout', { kind: SpanKind.PRODUCER })
    const { id } = await context.with(trace.setSpan(context.active(), producer), () => t.postbox.send('tr-on', { order: 42 }, { headers: { tenant: 'a' } }))
    producer.end()
    let activeInHandler: string | undefined
    const [message] = await consume('tr-on', 1, () => {
      activeInHandler = trace.getActiveSpan()?.spanContext().spanId
    })
    const { traceId, spanId: producerId } = producer.spanContext()
    expect(message?.headers).toEqual({ tenant: 'a', traceparent: `00-${traceId}-${producerId}-01` })

    const consumer = exporter.getFinishedSpans().find((s) => s.name === 'process tr-on')
    expect(consumer).toBeDefined()
    expect(consumer?.kind).toBe(SpanKind.CONSUMER)
    expect(consumer?.spanContext().traceId).toBe(traceId)
    expect(consumer?.parentSpanContext?.spanId).toBe(producerId)
    expect(consumer?.attributes).toMatchObject({
      'messaging.system': 'postbox',
      'messaging.destination.name': 'tr-on',
      'messaging.message.id': id,
      'messaging.operation.type': 'process',
    })
    // The handler runs inside the consumer span, so its own spans are children of it.
    expect(activeInHandler).toBe(spanId(consumer as ReadableSpan))
  })

  it('puts the context on every message of a batch, and keeps a traceparent the caller set', async () => {
    exporter.reset()
    await t.postbox.createQueue('tr-batch')
    const span = trace.getTracer('test').startSpan('batch')
    const callerTraceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'
    await context.with(trace.setSpan(context.active(), span), async () => {
      await t.postbox.sendBatch('tr-batch', [{ n: 1 }, { payload: { n: 2 }, headers: { traceparent: callerTraceparent } }])
    })
    span.end()
    // Outside any span nothing is added.
    await t.postbox.send('tr-batch', { n: 3 })
    const seen = await consume('tr-batch', 3)
    const byN = new Map(seen.map((m) => [(m.payload as { n: number }).n, m.headers]))
    expect(byN.get(1)).toEqual({ traceparent: `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01` })
    expect(byN.get(2)).toEqual({ traceparent: callerTraceparent })
    expect(byN.get(3)).toEqual({})
    const consumers = exporter.getFinishedSpans().filter((s) => s.name === 'process tr-batch')
    expect(consumers).toHaveLength(3)
    expect(consumers.find((s) => s.attributes['messaging.message.id'] === seen.find((m) => byN.get(3) === m.headers)?.id)?.parentSpanContext).toBeUndefined()
    expect(consumers.filter((s) => s.parentSpanContext?.traceId === '0af7651916cd43dd8448eb211c80319c')).toHaveLength(1)
  })

  it('records a handler error on the consumer span', async () => {
    exporter.reset()
    await t.postbox.createQueue('tr-fail', { maxAttempts: 1 })
    await t.postbox.send('tr-fail', { n: 1 })
    const worker = t.postbox.work('tr-fail', () => {
      throw new Error('card declined')
    })
    try {
      await waitFor('the failed span', () => exporter.getFinishedSpans().find((s) => s.name === 'process tr-fail'))
    } finally {
      await worker.stop()
    }
    const span = exporter.getFinishedSpans().find((s) => s.name === 'process tr-fail')
    expect(span?.status).toEqual({ code: SpanStatusCode.ERROR, message: 'card declined' })
    expect(span?.events.map((e) => [e.name, e.attributes?.['exception.message']])).toEqual([['exception', 'card declined']])
  })
})
