import { z } from 'zod'
import { InvalidOptionsError } from '../../errors.js'
import { html, type Html } from '../html.js'
import { href, queueHref } from '../page.js'
import type { QueueOverview } from '../queue-overview.js'
import { jsonResponse, seeOther, type DashboardContext, type Route } from '../routes.js'

/**
 * The redrive form of a dead-letter queue, when actions are allowed; otherwise how to do it
 * from the command line. The form carries the CSRF token; the POST is checked for it.
 */
export function redriveForm(ctx: DashboardContext, q: QueueOverview): Html {
  if (q.total === 0) return html``
  if (!ctx.allowActions) {
    return html`<p class="muted" data-testid="read-only-note">Read-only: to move these back, run <code>postbox redrive ${q.queue}</code>, or start the dashboard with <code>--allow-actions</code>.</p>`
  }
  return html`<form class="redrive" method="post" action="${href(ctx, '/actions/redrive')}">
    <input type="hidden" name="csrf" value="${ctx.access.csrfToken}">
    <input type="hidden" name="queue" value="${q.queue}">
    <label>to <input name="to" placeholder="the queues they came from" size="24"></label>
    <label>at most <input name="max" type="number" min="1" placeholder="all" size="6"></label>
    <button type="submit">Redrive</button>
  </form>`
}

const formSchema = z.object({
  queue: z.string(),
  to: z.string().optional().transform((v) => (v ? v : undefined)),
  max: z.string().optional().transform((v, c) => {
    if (!v) return undefined
    const n = Number(v)
    if (!Number.isInteger(n) || n < 1) {
      c.addIssue({ code: 'custom', message: 'max must be a whole number of at least 1' })
      return z.NEVER
    }
    return n
  }),
})

const jsonSchema = z.strictObject({ to: z.string().optional(), max: z.number().int().min(1).optional() })

function parse<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const result = schema.safeParse(value)
  if (!result.success) throw new InvalidOptionsError(`invalid redrive request: ${result.error.issues.map((i) => i.message).join('; ')}`)
  return result.data
}

/** Redrive, from the page's form and from the JSON API. Both are actions: refused when read-only. */
export const deadLetterRoutes: Route[] = [
  {
    method: 'POST',
    pattern: '/actions/redrive',
    async handle(request, ctx) {
      const form = parse(formSchema, await request.body())
      const moved = await ctx.postbox.redrive(form.queue, { to: form.to, max: form.max })
      await ctx.sampler.sample() // the page shows the counts after the move
      return seeOther(queueHref(ctx, form.queue, `?redriven=${moved}`))
    },
  },
  {
    method: 'POST',
    pattern: '/api/queues/:name/redrive',
    async handle(request, ctx) {
      const o = parse(jsonSchema, await request.body())
      const moved = await ctx.postbox.redrive(request.params.name as string, o)
      await ctx.sampler.sample()
      return jsonResponse({ moved })
    },
  },
]
