// For `npm run bench -- --tracing`: the OpenTelemetry SDK registered as an app would (tracer
// provider with a batch processor, AsyncLocalStorage context, W3C propagator), exporting to
// nowhere, and the whole run inside one active span, so that every send injects a traceparent
// and every handled message gets a consumer span. Compared with a run without the flag, it
// shows what tracing costs when it is on; a run without it shows that it costs nothing when off.
import { context, propagation, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base'

const discard: SpanExporter = {
  export: (_spans, done) => done({ code: 0 }),
  shutdown: async () => {},
}

/** Registers the SDK and runs `fn` inside a root span. */
export async function withTracing<T>(fn: () => Promise<T>): Promise<T> {
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(discard)] }))
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
  return trace.getTracer('bench').startActiveSpan('bench run', async (span) => {
    try {
      return await fn()
    } finally {
      span.end()
    }
  })
}
