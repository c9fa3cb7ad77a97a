import { html, type Html } from './html.js'
import type { DashboardContext } from './routes.js'

/** A link to a dashboard path, under the mount point. */
export function href(ctx: Pick<DashboardContext, 'basePath'>, path: string): string {
  return `${ctx.basePath}${path}`
}

/** A link to a queue's page. */
export function queueHref(ctx: Pick<DashboardContext, 'basePath'>, queue: string, query = ''): string {
  return href(ctx, `/queues/${encodeURIComponent(queue)}${query}`)
}

/**
 * The page around a section: title, header with the schema and mode, and the stylesheet and
 * script served by the dashboard itself (no CDN: it works offline, and the Content-Security-
 * Policy allows nothing else).
 */
export function page(ctx: DashboardContext, title: string, body: Html): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · postbox</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${href(ctx, '/assets/dashboard.css')}">
<script src="${href(ctx, '/assets/dashboard.js')}" defer></script>
</head>
<body>
<header>
  <a class="brand" href="${href(ctx, '/')}">postbox</a>
  <nav class="sections"><a href="${href(ctx, '/')}">queues</a> <a href="${href(ctx, '/bindings')}">bindings</a> <a href="${href(ctx, '/schedules')}">schedules</a></nav>
  <span class="schema">schema <code>${ctx.postbox.schema.name}</code></span>
  <span class="mode ${ctx.allowActions ? 'actions' : 'read-only'}" data-testid="mode">${ctx.allowActions ? 'actions enabled' : 'read-only'}</span>
</header>
<main>
${body}
</main>
</body>
</html>`
}

/** A message shown above a section (after an action). */
export function notice(text: string | null): Html {
  return text ? html`<p class="notice" role="status">${text}</p>` : html``
}
