import type { IncomingMessage, ServerResponse } from 'node:http'
import { z } from 'zod'
import { durationMs, positiveDurationMs, type Duration } from '../duration.js'
import { InvalidOptionsError, PostboxError, QueueNotFoundError } from '../errors.js'
import { trackOpen } from '../open-resources.js'
import { parseOptions } from '../validation.js'
import { Access } from './access.js'
import { html } from './html.js'
import { href, page } from './page.js'
import { bodyKind, readBody } from './request-body.js'
import { htmlResponse, jsonResponse, wantsJson, type DashboardContext, type DashboardPostbox, type DashboardRequest, type DashboardResponse, type Route } from './routes.js'
import { assetRoutes } from './sections/assets.js'
import { bindingRoutes } from './sections/bindings.js'
import { deadLetterRoutes } from './sections/dead-letters.js'
import { loginRoutes } from './sections/login.js'
import { metricsRoutes } from './sections/metrics.js'
import { overviewRoutes } from './sections/overview.js'
import { queuePageRoutes } from './sections/queue-page.js'
import { scheduleRoutes } from './sections/schedules.js'
import { streamRoutes } from './sections/streams.js'
import { StatsSampler } from './stats-sampler.js'

// Each domain's pages and API live in sections/<name>.ts as a list of routes; a new section
// (bindings, streams, schedules) is a new file and one entry here.
const ROUTES: readonly Route[] = [
  ...assetRoutes, ...loginRoutes, ...overviewRoutes, ...queuePageRoutes, ...deadLetterRoutes, ...bindingRoutes, ...scheduleRoutes, ...streamRoutes, ...metricsRoutes,
]

/** Options of {@link createDashboard}. */
export interface DashboardOptions {
  /** Allow actions (redrive). Default false: read-only. */
  allowActions?: boolean
  /** When set, every request must present it (Bearer header, or the cookie from `/login`). */
  token?: string
  /** The path the dashboard is mounted at, for its links, for example `/postbox`. Default: the root. */
  basePath?: string
  /** How often to read `queue_stats` for the charts and rates. Default `'5s'`. */
  sampleInterval?: Duration
  /** How much history the charts show. Default `'15m'`. */
  history?: Duration
  /** Host header names accepted (DNS-rebinding protection); default: any. The standalone server sets loopback names. */
  allowedHosts?: readonly string[]
}

const dashboardOptionsSchema = z.strictObject({
  allowActions: z.boolean().optional(),
  token: z.string().min(8, 'a token must have at least 8 characters').optional(),
  basePath: z.string().regex(/^(\/[A-Za-z0-9._~-]+)*\/?$/, "must be a path such as '/postbox'").optional(),
  sampleInterval: positiveDurationMs.optional(),
  history: durationMs.refine((ms) => ms >= 60_000, 'must be at least a minute').optional(),
  allowedHosts: z.array(z.string().min(1)).optional(),
})

/** A dashboard: a request handler for node:http (or express, connect), and how to stop it. */
export interface Dashboard {
  /**
   * Handles one request. Mount it as the server's request listener, or under a path in an app
   * (`app.use('/postbox', dashboard.handle)` with `basePath: '/postbox'`); with `next`, paths
   * the dashboard does not know are passed on instead of answered with 404.
   */
  readonly handle: (request: IncomingMessage, response: ServerResponse, next?: () => void) => void
  /** Stops the sampler. Idempotent; the Postbox stays open (it is yours). */
  close(): Promise<void>
}

const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on form posts.
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
}

interface CompiledRoute {
  route: Route
  regex: RegExp
  names: string[]
}

function compile(route: Route): CompiledRoute {
  const names: string[] = []
  const source = route.pattern.replace(/:([a-z]+)/g, (_, name: string) => {
    names.push(name)
    return '([^/]+)'
  })
  return { route, regex: new RegExp(`^${source}$`), names }
}

/**
 * Creates the dashboard for a Postbox: a page of queues (counts, oldest ready age, net change,
 * depth over the last minutes), each queue's messages and dead letters read without claiming,
 * redrive (only with `allowActions`), JSON under `/api/`, and Prometheus text at `/metrics`.
 * It starts a sampler that reads `queue_stats` every `sampleInterval`; `close()` stops it.
 *
 * @example
 * const dashboard = createDashboard(postbox, { basePath: '/postbox' })
 * app.use('/postbox', dashboard.handle)
 */
export function createDashboard(postbox: DashboardPostbox, options?: DashboardOptions): Dashboard {
  const o = parseOptions(dashboardOptionsSchema, options, 'dashboard options')
  const sampleMs = o.sampleInterval ?? 5_000
  const sampler = new StatsSampler(postbox, { intervalMs: sampleMs, keepMs: o.history ?? 15 * 60_000, rateWindowMs: Math.max(60_000, 2 * sampleMs) })
  const access = new Access(o.token, o.allowedHosts?.map((h) => h.toLowerCase()) ?? null)
  const basePath = (o.basePath ?? '').replace(/\/$/, '')
  const ctx: DashboardContext = { postbox, sampler, allowActions: o.allowActions ?? false, basePath, access }
  const routes = ROUTES.map(compile)
  sampler.start()
  const untrack = trackOpen('dashboard', `Dashboard(schema ${postbox.schema.name})`)
  let closing: Promise<void> | undefined
  return {
    handle: (request, response, next) => {
      respond(ctx, routes, request, response, next).catch((error: unknown) => {
        // Only a failure to write the response gets here (the client went away): nothing to answer.
        if (!response.headersSent) response.writeHead(500).end(String(error))
      })
    },
    close() {
      closing ??= sampler.stop().finally(untrack)
      return closing
    },
  }
}

async function respond(ctx: DashboardContext, routes: CompiledRoute[], req: IncomingMessage, res: ServerResponse, next?: () => void): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://dashboard.invalid')
  let path = url.pathname
  // express and connect strip the mount path from req.url (and keep originalUrl); a bare
  // node:http server does not, so the dashboard strips basePath itself and leaves other paths alone.
  const stripped = (req as { originalUrl?: string }).originalUrl !== undefined
  if (ctx.basePath && !stripped) {
    if (path !== ctx.basePath && !path.startsWith(`${ctx.basePath}/`)) return next ? next() : send(res, req, problem(ctx, path, 404, `no page at ${path}`))
    path = path.slice(ctx.basePath.length) || '/'
  }
  const method = req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET')
  let response: DashboardResponse
  try {
    const found = find(routes, method, path)
    if (!found && next) return next()
    response = await answer(ctx, found, { method, path, query: url.searchParams, headers: req.headers, params: {}, body: () => readBody(req) })
  } catch (error) {
    response = failure(ctx, path, error)
  }
  send(res, req, response)
}

function send(res: ServerResponse, req: IncomingMessage, response: DashboardResponse): void {
  res.writeHead(response.status, { ...SECURITY_HEADERS, ...response.headers })
  res.end(req.method === 'HEAD' ? undefined : response.body)
}

function find(routes: CompiledRoute[], method: string, path: string): { route: Route; params: Record<string, string> } | 'wrong-method' | undefined {
  let pathMatched = false
  for (const r of routes) {
    const match = r.regex.exec(path)
    if (!match) continue
    pathMatched = true
    if (r.route.method !== method) continue
    const params: Record<string, string> = {}
    // A malformed escape (%E0%A4%A) throws URIError, answered as a bad request by the caller.
    r.names.forEach((name, i) => (params[name] = decodeURIComponent(match[i + 1] as string)))
    return { route: r.route, params }
  }
  return pathMatched ? 'wrong-method' : undefined
}

/** Access checks in order (host, token, method, actions, origin, CSRF), then the route. */
async function answer(ctx: DashboardContext, found: ReturnType<typeof find>, request: DashboardRequest): Promise<DashboardResponse> {
  const refuse = (status: number, message: string) => problem(ctx, request.path, status, message)
  if (!ctx.access.hostAllowed(request.headers)) return refuse(403, 'this Host is not allowed (the dashboard answers only to the names it is bound to)')
  // The sign-in page and the stylesheet and script it needs are open to everyone.
  const isPublic = request.path === '/login' || request.path.startsWith('/assets/')
  if (!isPublic && !ctx.access.authenticated(request.headers)) {
    if (!wantsJson(request) && request.path !== '/metrics' && request.method === 'GET') return { status: 303, headers: { location: href(ctx, '/login') }, body: '' }
    return { ...refuse(401, 'this dashboard needs its token: send Authorization: Bearer <token>'), headers: { 'content-type': 'application/json; charset=utf-8', 'www-authenticate': 'Bearer' } }
  }
  if (found === undefined) return refuse(404, `no page at ${request.path}`)
  if (found === 'wrong-method') return refuse(405, `${request.method} is not allowed at ${request.path}`)
  if (request.method === 'POST') {
    if (!isPublic && !ctx.allowActions) return refuse(403, 'this dashboard is read-only: start it with --allow-actions (allowActions: true) to redrive from it')
    if (!ctx.access.sameOrigin(request.headers)) return refuse(403, 'cross-origin request refused')
    const kind = bodyKind(request.headers['content-type'])
    if (kind === 'other') return refuse(415, 'send a form or application/json')
    if (kind === 'form' && !isPublic) {
      const fields = await request.body()
      if (fields.csrf !== ctx.access.csrfToken) return refuse(403, 'the form is stale or forged: reload the page and try again')
      return found.route.handle({ ...request, params: found.params, body: async () => fields }, ctx)
    }
  }
  return found.route.handle({ ...request, params: found.params }, ctx)
}

function failure(ctx: DashboardContext, path: string, error: unknown): DashboardResponse {
  if (error instanceof URIError) return problem(ctx, path, 400, 'malformed URL')
  if (error instanceof QueueNotFoundError) return problem(ctx, path, 404, error.message)
  if (error instanceof InvalidOptionsError || error instanceof PostboxError) return problem(ctx, path, 400, error.message)
  return problem(ctx, path, 500, `the dashboard failed: ${error instanceof Error ? error.message : String(error)}`)
}

function problem(ctx: DashboardContext, path: string, status: number, message: string): DashboardResponse {
  if (wantsJson({ path }) || path === '/metrics') return jsonResponse({ error: message }, status)
  return htmlResponse(page(ctx, 'error', html`<p><a href="${href(ctx, '/')}">← all queues</a></p><p class="error" role="alert" data-testid="problem">${message}</p>`), status)
}
