import { depthChart } from '../depth-chart.js'
import { formatDuration } from '../../duration.js'
import { formatAge as age } from '../../inspect/display.js'
import { count, rate } from '../format.js'
import { html, type Html } from '../html.js'
import { href, page, queueHref } from '../page.js'
import { chartSpanMs, queueHistory, readOverview, type Overview } from '../queue-overview.js'
import { htmlResponse, jsonResponse, type DashboardContext, type Route } from '../routes.js'
import type { GroupSummary } from '../../streams/group-summary.js'
import { readStreams, streamsTable } from './streams.js'

/** The queue's limits, when it has any, as a small note after its name. */
function flowNote(q: Overview['queues'][number]): Html | string {
  const limits = q.flow.replace(/^paused(, )?/, '')
  return limits ? html` <span class="muted flow" data-col="flow">${limits}</span>` : ''
}

/** The queues at a glance: counts, oldest ready age, net change, depth over the last minutes. */
function queuesTable(ctx: DashboardContext, overview: Overview): Html {
  if (overview.queues.length === 0) return html`<p class="empty">No queues yet: create one with <code>createQueue()</code>.</p>`
  const spanMs = chartSpanMs(ctx)
  const rows = overview.queues.map((q) => {
    const h = queueHistory(ctx, q.queue)
    const total = h.times.map((_, i) => (h.ready[i] as number) + (h.delayed[i] as number) + (h.inFlight[i] as number))
    return html`<tr data-queue="${q.queue}">
      <td class="name"><a href="${queueHref(ctx, q.queue)}">${q.queue}</a>${q.isDeadLetterQueue ? html` <span class="tag">dead letters</span>` : ''}${q.paused ? html` <span class="tag paused" data-testid="paused">paused</span>` : ''}${flowNote(q)}</td>
      <td class="num" data-col="ready">${count(q.ready)}</td>
      <td class="num" data-col="delayed">${count(q.delayed)}</td>
      <td class="num" data-col="in-flight">${count(q.inFlight)}</td>
      <td class="num" data-col="dead">${q.dead > 0 && q.deadLetter !== false ? html`<a class="dead" href="${queueHref(ctx, q.queue, '?view=dead')}">${count(q.dead)}</a>` : count(q.dead)}</td>
      <td class="num" data-col="oldest">${age(q.oldestReadyAgeMs)}</td>
      <td class="num" data-col="net">${rate(q.netPerSecond, true)}</td>
      <td>${depthChart({ times: h.times, spanMs, series: [{ label: 'depth', color: '#3366cc', values: total }] }, { width: 160, height: 28, axes: false, title: `${q.queue}: depth over the last ${formatDuration(spanMs)}` })}</td>
    </tr>`
  })
  return html`<table class="queues">
    <thead><tr><th>queue</th><th>ready</th><th>delayed</th><th>in flight</th><th>dead</th><th>oldest ready</th><th title="net change of depth per second over the last minute">net</th><th>depth, last ${formatDuration(spanMs)}</th></tr></thead>
    <tbody>${rows}</tbody>
  </table>`
}

/** Queues with dead letters, linking to where they can be browsed and redriven. */
function deadLetterSummary(ctx: DashboardContext, overview: Overview): Html {
  const holding = overview.queues.filter((q) => q.isDeadLetterQueue && q.total > 0)
  if (holding.length === 0) return html`<p class="empty">No dead letters.</p>`
  return html`<ul class="dead-letters">${holding.map((q) => html`<li><a href="${queueHref(ctx, q.queue)}">${q.queue}</a>: ${count(q.total)} message${q.total === 1 ? '' : 's'}, oldest ${age(q.oldestReadyAgeMs)}</li>`)}</ul>`
}

/** The part of the overview that refreshes by itself. */
function overviewFragment(ctx: DashboardContext, overview: Overview, streams: readonly GroupSummary[]): Html {
  const r = overview.rates
  const window = r.windowMs > 0 ? `over the last ${Math.round(r.windowMs / 1000)} s` : 'measuring (needs two samples)'
  return html`<p class="rates">
      <span>sent <strong data-testid="sent-rate">${rate(r.sentPerSecond)}</strong></span>
      <span>removed <strong>${rate(r.removedPerSecond)}</strong></span>
      <span class="muted">all queues, ${window}; sampled every ${overview.sampleIntervalMs / 1000} s, at ${overview.at ?? '—'} (database clock)</span>
    </p>
    ${overview.samplingError ? html`<p class="error" role="alert">The last reading failed: ${overview.samplingError}</p>` : ''}
    <h2>Queues</h2>
    ${queuesTable(ctx, overview)}
    <h2>Dead letters</h2>
    ${deadLetterSummary(ctx, overview)}
    <h2>Streams</h2>
    ${streamsTable(streams)}`
}

/** `/` (queues, dead letters, streams), its refreshing fragment, and `/api/queues`. */
export const overviewRoutes: Route[] = [
  {
    method: 'GET',
    pattern: '/',
    async handle(_request, ctx) {
      const [overview, streams] = await Promise.all([readOverview(ctx), readStreams(ctx)])
      return htmlResponse(page(ctx, 'queues', html`<section data-refresh="${href(ctx, '/fragments/overview')}">${overviewFragment(ctx, overview, streams)}</section>`))
    },
  },
  {
    method: 'GET',
    pattern: '/fragments/overview',
    async handle(_request, ctx) {
      const [overview, streams] = await Promise.all([readOverview(ctx), readStreams(ctx)])
      return htmlResponse(overviewFragment(ctx, overview, streams))
    },
  },
  {
    method: 'GET',
    pattern: '/api/queues',
    async handle(_request, ctx) {
      return jsonResponse(await readOverview(ctx))
    },
  },
]
