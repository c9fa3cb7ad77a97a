import { formatDuration } from '../../duration.js'
import { summariseGroups, type GroupSummary } from '../../streams/group-summary.js'
import { count } from '../format.js'
import { html, type Html } from '../html.js'
import { jsonResponse, type DashboardContext, type Route } from '../routes.js'

/** Every stream and consumer group, with lag summed over the partitions (what `/api/streams` returns). */
export async function readStreams(ctx: DashboardContext): Promise<GroupSummary[]> {
  const [streams, stats] = await Promise.all([ctx.postbox.listStreams(), ctx.postbox.streamStats()])
  return summariseGroups(streams, stats)
}

/** The streams at a glance: per stream and consumer group, its lag, its losses to retention and its members. */
export function streamsTable(rows: readonly GroupSummary[]): Html {
  if (rows.length === 0) return html`<p class="empty">No streams yet: create one with <code>createStream()</code>.</p>`
  return html`<table class="streams">
    <thead><tr><th>stream</th><th>partitions</th><th>retention</th><th>events</th><th>group</th><th title="events the group has not committed yet">lag</th><th title="events retention dropped before the group read them">lost</th><th>members</th></tr></thead>
    <tbody>${rows.map((r) => html`<tr data-stream="${r.stream}" data-group="${r.group ?? ''}">
      <td class="name">${r.stream}</td>
      <td class="num">${count(r.partitions)}</td>
      <td class="num">${formatDuration(r.retentionMs)}</td>
      <td class="num">${count(r.head + r.unstamped)}</td>
      <td>${r.group ?? html`<span class="muted">no group</span>`}</td>
      <td class="num" data-col="lag">${r.lag === null ? '' : count(r.lag)}</td>
      <td class="num">${r.lostToRetention === null ? '' : count(r.lostToRetention)}</td>
      <td class="num">${r.group === null ? '' : count(r.members)}</td>
    </tr>`)}</tbody>
  </table>`
}

/** `/api/streams`: {@link readStreams} as JSON. */
export const streamRoutes: Route[] = [
  {
    method: 'GET',
    pattern: '/api/streams',
    async handle(_request, ctx) {
      return jsonResponse({ streams: await readStreams(ctx) })
    },
  },
]
