import { formatAge, formatTime } from '../../inspect/display.js'
import type { ScheduleInfo } from '../../schedule/schedule-options.js'
import { html, type Html } from '../html.js'
import { href, page } from '../page.js'
import { htmlResponse, jsonResponse, type DashboardContext, type Route } from '../routes.js'

/** The schedules and the database clock they were read at. */
async function readSchedules(ctx: DashboardContext): Promise<{ at: Date; schedules: ScheduleInfo[] }> {
  const [{ at }, schedules] = await Promise.all([ctx.postbox.activity(), ctx.postbox.listSchedules()])
  return { at, schedules }
}

/** When the next tick is, from the database clock: `in 4m 10s`, or how overdue it is. */
function untilNext(next: Date | null, at: Date): Html {
  if (next === null) return html`<span class="muted">never</span>`
  const ms = next.getTime() - at.getTime()
  return ms >= 0 ? html`in ${formatAge(ms)}` : html`<span class="error">due ${formatAge(-ms)} ago</span>`
}

/** The schedules table: expression, zone, queue, next tick (and how soon), last tick. */
function schedulesFragment(read: { at: Date; schedules: ScheduleInfo[] }): Html {
  if (read.schedules.length === 0) return html`<p class="empty">No schedules: make one with <code>schedule()</code>.</p>`
  const rows = read.schedules.map((s) => html`<tr data-schedule="${s.name}">
      <td class="name">${s.name}</td>
      <td><code>${s.cron}</code></td>
      <td>${s.timezone}</td>
      <td>${s.queue}</td>
      <td>${s.missed}</td>
      <td data-col="next">${formatTime(s.nextFireAt)} <span class="muted">(${untilNext(s.nextFireAt, read.at)})</span></td>
      <td data-col="last">${formatTime(s.lastFireAt)}</td>
    </tr>`)
  return html`<table class="schedules">
    <thead><tr><th>schedule</th><th>cron</th><th>time zone</th><th>queue</th><th>missed</th><th>next fire</th><th>last fire</th></tr></thead>
    <tbody>${rows}</tbody>
  </table>
  <p class="muted">Times in UTC, read at ${formatTime(read.at)} (database clock).</p>`
}

/** `/schedules`, its refreshing fragment, and `/api/schedules`. */
export const scheduleRoutes: Route[] = [
  {
    method: 'GET',
    pattern: '/schedules',
    async handle(_request, ctx) {
      const body = html`<h2>Schedules</h2><section data-refresh="${href(ctx, '/fragments/schedules')}">${schedulesFragment(await readSchedules(ctx))}</section>`
      return htmlResponse(page(ctx, 'schedules', body))
    },
  },
  {
    method: 'GET',
    pattern: '/fragments/schedules',
    async handle(_request, ctx) {
      return htmlResponse(schedulesFragment(await readSchedules(ctx)))
    },
  },
  {
    method: 'GET',
    pattern: '/api/schedules',
    async handle(_request, ctx) {
      return jsonResponse(await readSchedules(ctx))
    },
  },
]
