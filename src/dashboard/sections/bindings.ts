import { formatTime } from '../../inspect/display.js'
import { count } from '../format.js'
import { html, type Html } from '../html.js'
import { page, queueHref } from '../page.js'
import { htmlResponse, jsonResponse, type DashboardContext, type Route } from '../routes.js'
import type { Binding } from '../../routing/binding-admin.js'
import type { UnroutedStats } from '../../routing/publisher.js'

interface BindingsView {
  bindings: Binding[]
  unrouted: UnroutedStats
}

async function readBindings(ctx: DashboardContext): Promise<BindingsView> {
  const [bindings, unrouted] = await Promise.all([ctx.postbox.listBindings(), ctx.postbox.unroutedStats()])
  return { bindings, unrouted }
}

/** The topic bindings (pattern and header filter per queue), and the publishes that reached no queue. */
function bindingsSection(ctx: DashboardContext, view: BindingsView): Html {
  const u = view.unrouted
  const unrouted = html`<p class="unrouted" data-testid="unrouted">Unrouted publishes: <strong>${count(u.count)}</strong>${u.lastRoutingKey === null ? '' : html`, the latest <code>${u.lastRoutingKey}</code> at ${formatTime(u.lastAt)}`}</p>`
  if (view.bindings.length === 0) {
    return html`<h2>Bindings</h2><p class="empty">No bindings yet: bind a queue to a routing-key pattern with <code>bind()</code>.</p>${unrouted}`
  }
  const rows = view.bindings.map((b) => html`<tr data-queue="${b.queue}">
      <td class="name"><a href="${queueHref(ctx, b.queue)}">${b.queue}</a></td>
      <td><code>${b.pattern}</code></td>
      <td>${b.filter === null ? html`<span class="muted">none</span>` : html`<code>${JSON.stringify(b.filter)}</code>`}</td>
    </tr>`)
  return html`<h2>Bindings</h2>
    <table class="bindings">
      <thead><tr><th>queue</th><th>pattern</th><th>header filter</th></tr></thead>
      <tbody>${rows}</tbody>
    </table>
    ${unrouted}`
}

/** `/bindings` and `/api/bindings`. */
export const bindingRoutes: Route[] = [
  {
    method: 'GET',
    pattern: '/bindings',
    async handle(_request, ctx) {
      return htmlResponse(page(ctx, 'bindings', bindingsSection(ctx, await readBindings(ctx))))
    },
  },
  {
    method: 'GET',
    pattern: '/api/bindings',
    async handle(_request, ctx) {
      return jsonResponse(await readBindings(ctx))
    },
  },
]
