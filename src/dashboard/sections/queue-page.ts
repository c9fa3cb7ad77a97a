import { QueueNotFoundError } from '../../errors.js'
import type { PeekedMessage, PeekPage } from '../../inspect/peek.js'
import { formatDuration } from '../../duration.js'
import { assertQueueName } from '../../queue-name.js'
import { depthChart } from '../depth-chart.js'
import { formatAge as age, formatTime as time } from '../../inspect/display.js'
import { count, payloadPreview, rate } from '../format.js'
import { html, type Html } from '../html.js'
import { href, notice, page, queueHref } from '../page.js'
import { chartSpanMs, queueHistory, readOverview, type QueueOverview } from '../queue-overview.js'
import { htmlResponse, jsonResponse, type DashboardContext, type DashboardRequest, type Route } from '../routes.js'
import { redriveForm } from './dead-letters.js'

const SERIES = [
  { key: 'ready', label: 'ready', color: '#3366cc', swatch: 'swatch-ready' },
  { key: 'inFlight', label: 'in flight', color: '#dc8a00', swatch: 'swatch-in-flight' },
  { key: 'delayed', label: 'delayed', color: '#7a7a7a', swatch: 'swatch-delayed' },
] as const

async function findQueue(ctx: DashboardContext, name: string): Promise<QueueOverview> {
  assertQueueName(name)
  const queue = (await readOverview(ctx)).queues.find((q) => q.queue === name)
  if (!queue) throw new QueueNotFoundError(name)
  return queue
}

/** Counts and the depth chart of one queue: the part of its page that refreshes by itself. */
function statsFragment(ctx: DashboardContext, q: QueueOverview): Html {
  const h = queueHistory(ctx, q.queue)
  const spanMs = chartSpanMs(ctx)
  const chart = depthChart(
    { times: h.times, spanMs, series: SERIES.map((s) => ({ label: s.label, color: s.color, values: h[s.key] })) },
    { width: 640, height: 180, axes: true, title: `${q.queue}: messages by state over the last ${formatDuration(spanMs)}` },
  )
  return html`<dl class="counts">
      <div><dt>ready</dt><dd data-testid="ready">${count(q.ready)}</dd></div>
      <div><dt>delayed</dt><dd>${count(q.delayed)}</dd></div>
      <div><dt>in flight</dt><dd>${count(q.inFlight)}</dd></div>
      <div><dt>dead</dt><dd data-testid="dead">${count(q.dead)}</dd></div>
      <div><dt>oldest ready</dt><dd>${age(q.oldestReadyAgeMs) || '—'}</dd></div>
      <div><dt>net</dt><dd>${rate(q.netPerSecond, true)}</dd></div>
    </dl>
    <figure>${chart}<figcaption>${SERIES.map((s) => html`<span class="legend"><i class="${s.swatch}"></i>${s.label}</span>`)}</figcaption></figure>`
}

/** An error cell: its first line, expandable to the whole text (a stack trace, often). */
function errorCell(error: string | null): Html {
  if (error === null) return html``
  const [first = '', ...rest] = error.split('\n')
  if (rest.length === 0) return html`${first}`
  return html`<details><summary>${first}</summary><pre>${rest.join('\n')}</pre></details>`
}

/** A payload cell: one line, expandable to the whole message. */
function payloadCell(m: PeekedMessage): Html {
  const full = JSON.stringify({ payload: m.payload, headers: m.headers, dedupeKey: m.dedupeKey, groupKey: m.groupKey }, null, 2)
  return html`<details><summary><code>${payloadPreview(m.payload, m.encoding)}</code></summary><pre>${full.length > 20_000 ? `${full.slice(0, 20_000)}…` : full}</pre></details>`
}

function messagesTable(messages: PeekedMessage[], dead: boolean): Html {
  if (messages.length === 0) return html`<p class="empty">${dead ? 'No dead letters.' : 'No messages.'}</p>`
  if (dead) {
    return html`<table class="messages dead"><thead><tr><th>id</th><th>from</th><th>attempts</th><th>dead at</th><th>error</th><th>payload</th></tr></thead>
      <tbody>${messages.map((m) => html`<tr data-id="${m.id}"><td class="num">${m.id}</td><td>${m.originalQueue}</td><td class="num">${m.originalAttempt}</td><td class="time">${time(m.deadAt)}</td><td class="error-text">${errorCell(m.lastError)}</td><td>${payloadCell(m)}</td></tr>`)}</tbody></table>`
  }
  return html`<table class="messages"><thead><tr><th>id</th><th>state</th><th>attempt</th><th>priority</th><th>enqueued</th><th>available</th><th>last error</th><th>payload</th></tr></thead>
    <tbody>${messages.map((m) => html`<tr data-id="${m.id}"><td class="num">${m.id}</td><td>${m.state.replace('_', ' ')}</td><td class="num">${m.attempt}</td><td class="num">${m.priority}</td><td class="time">${time(m.enqueuedAt)}</td><td class="time">${time(m.availableAt)}</td><td class="error-text">${errorCell(m.lastError)}</td><td>${payloadCell(m)}</td></tr>`)}</tbody></table>`
}

/** Whether the page lists dead letters: a dead-letter queue's own messages, or a queue's `?view=dead`. */
function listsDeadLetters(q: QueueOverview, request: DashboardRequest): boolean {
  return q.isDeadLetterQueue || request.query.get('view') === 'dead'
}

function peekOptions(request: DashboardRequest, deadView: boolean) {
  const limit = Number(request.query.get('limit') ?? 50)
  return { limit: Number.isInteger(limit) ? Math.min(Math.max(limit, 1), 1000) : 50, after: request.query.get('after') ?? undefined, dead: deadView }
}

function queuePage(ctx: DashboardContext, q: QueueOverview, request: DashboardRequest, messages: PeekPage): Html {
  const deadView = request.query.get('view') === 'dead'
  const dead = listsDeadLetters(q, request)
  const redriven = request.query.get('redriven')
  const tabs = q.deadLetter === false
    ? ''
    : html`<nav class="tabs"><a href="${queueHref(ctx, q.queue)}" class="${deadView ? '' : 'current'}">messages</a><a href="${queueHref(ctx, q.queue, '?view=dead')}" class="${deadView ? 'current' : ''}">its dead letters (${count(q.dead)}, in ${q.deadLetter})</a></nav>`
  const next = messages.next
    ? html`<p><a class="next" href="${queueHref(ctx, q.queue, `?${new URLSearchParams({ ...(deadView ? { view: 'dead' } : {}), after: messages.next })}`)}">next page →</a></p>`
    : ''
  return html`<p><a href="${href(ctx, '/')}">← all queues</a></p>
    <h1>${q.queue}${q.isDeadLetterQueue ? html` <span class="tag">dead letters</span>` : ''}</h1>
    ${notice(redriven !== null && /^\d+$/.test(redriven) ? `Redrove ${redriven} message${redriven === '1' ? '' : 's'}.` : null)}
    <section data-refresh="${href(ctx, `/fragments/queues/${encodeURIComponent(q.queue)}`)}">${statsFragment(ctx, q)}</section>
    ${q.isDeadLetterQueue ? redriveForm(ctx, q) : ''}
    <h2>${dead ? 'Dead letters' : 'Messages'} <span class="muted">(delivery order, read without claiming)</span></h2>
    ${tabs}
    ${deadView && q.deadLetter !== false ? html`<p class="muted">They are in <a href="${queueHref(ctx, q.deadLetter)}" data-testid="dead-letter-queue">${q.deadLetter}</a>: redrive them from there.</p>` : ''}
    ${messagesTable(messages.messages, dead)}
    ${next}`
}

/** A queue's page, its refreshing fragment, and `/api/queues/:name` with its messages. */
export const queuePageRoutes: Route[] = [
  {
    method: 'GET',
    pattern: '/queues/:name',
    async handle(request, ctx) {
      const q = await findQueue(ctx, request.params.name as string)
      const messages = await ctx.postbox.peek(q.queue, peekOptions(request, request.query.get('view') === 'dead'))
      return htmlResponse(page(ctx, q.queue, queuePage(ctx, q, request, messages)))
    },
  },
  {
    method: 'GET',
    pattern: '/fragments/queues/:name',
    async handle(request, ctx) {
      return htmlResponse(statsFragment(ctx, await findQueue(ctx, request.params.name as string)))
    },
  },
  {
    method: 'GET',
    pattern: '/api/queues/:name',
    async handle(request, ctx) {
      const q = await findQueue(ctx, request.params.name as string)
      return jsonResponse({ ...q, history: queueHistory(ctx, q.queue) })
    },
  },
  {
    method: 'GET',
    pattern: '/api/queues/:name/messages',
    async handle(request, ctx) {
      const dead = request.query.get('dead') === 'true' || request.query.get('dead') === '1'
      return jsonResponse(await ctx.postbox.peek(request.params.name as string, peekOptions(request, dead)))
    },
  },
]
