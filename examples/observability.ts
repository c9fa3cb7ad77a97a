// Operating postbox from an app: Prometheus metrics on the app's own /metrics, the dashboard
// mounted at /postbox in the app's own server, and OpenTelemetry tracing from the request that
// sends a message to the handler that processes it. The example starts a server on 127.0.0.1
// (a free port), sends and handles one message inside a trace, reads its own /metrics and
// dashboard API, and exits.
//
//   npx tsx examples/observability.ts        (DATABASE_URL, or an embedded Postgres)
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { context, propagation, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { createDashboard } from '../src/dashboard/index.js'
import { Postbox } from '../src/index.js'
import { exampleDatabase } from './support/example-database.js'

// Tracing: register an OpenTelemetry SDK as usual (here with an in-memory exporter, to look at
// the spans below). postbox only uses @opentelemetry/api; without an SDK it does nothing.
const exporter = new InMemorySpanExporter()
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }))
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
propagation.setGlobalPropagator(new W3CTraceContextPropagator())

const { connectionString, schema, close } = await exampleDatabase('observability')
const postbox = new Postbox({ connectionString, schema })
await postbox.migrate()
await postbox.createQueue('emails')

// The app's own server: its /metrics, and the dashboard under /postbox (read-only by default).
const dashboard = createDashboard(postbox, { basePath: '/postbox' })
const server = createServer(async (req, res) => {
  if (req.url === '/metrics') {
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(await postbox.metrics())
  } else {
    dashboard.handle(req, res, () => res.writeHead(404).end())
  }
})
server.listen(0, '127.0.0.1')
await once(server, 'listening')
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

// A send inside a span carries the trace context in the message's headers (traceparent) ...
const tracer = trace.getTracer('shop')
await tracer.startActiveSpan('POST /signups', async (span) => {
  await postbox.send('emails', { to: 'ada@example.com' })
  span.end()
})
// ... and the handler runs in a consumer span whose parent is that span.
let handled!: () => void
const done = new Promise<void>((resolve) => (handled = resolve))
const worker = postbox.work('emails', async (message) => {
  console.log(`sending to ${(message.payload as { to: string }).to}, traceparent ${message.headers.traceparent}`)
  handled()
})
await done
await worker.stop()

const [request, consumer] = [exporter.getFinishedSpans().find((s) => s.name === 'POST /signups'), exporter.getFinishedSpans().find((s) => s.name === 'process emails')]
assert.equal(consumer?.parentSpanContext?.spanId, request?.spanContext().spanId)
console.log(`span "${consumer?.name}" is a child of "${request?.name}" in trace ${consumer?.spanContext().traceId}`)

const metrics = await (await fetch(`${base}/metrics`)).text()
console.log(metrics.split('\n').filter((line) => line.startsWith('postbox_messages_')).join('\n'))
assert.match(metrics, /postbox_messages_processed_total\{queue="emails",outcome="completed"\} 1/)
const queues = (await (await fetch(`${base}/postbox/api/queues`)).json()) as { queues: { queue: string }[] }
assert.deepEqual(queues.queues.map((q) => q.queue), ['emails', 'emails.dead'])

server.close()
await dashboard.close()
await postbox.close()
await close()
trace.disable()
context.disable()
