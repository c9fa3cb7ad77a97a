import type { IncomingHttpHeaders } from 'node:http'
import type { Postbox } from '../postbox.js'
import type { Access } from './access.js'
import type { Html } from './html.js'
import type { StatsSampler } from './stats-sampler.js'

/** What the dashboard uses of a Postbox. */
export type DashboardPostbox = Pick<Postbox, 'schema' | 'stats' | 'activity' | 'listQueues' | 'peek' | 'redrive' | 'metrics' | 'listBindings' | 'unroutedStats' | 'listSchedules' | 'listStreams' | 'streamStats'>

/** What every route can use. */
export interface DashboardContext {
  readonly postbox: DashboardPostbox
  readonly sampler: StatsSampler
  /** Whether POST actions (redrive) are allowed. */
  readonly allowActions: boolean
  /** Where the dashboard is mounted, without a trailing slash ('' at the root). */
  readonly basePath: string
  /** Token, session cookie, origin and CSRF checks; forms carry `access.csrfToken`. */
  readonly access: Access
}

/** A request as a route sees it: the path below the mount point, its parameters, its body. */
export interface DashboardRequest {
  readonly method: string
  readonly path: string
  readonly params: Readonly<Record<string, string>>
  readonly query: URLSearchParams
  readonly headers: IncomingHttpHeaders
  /** The body: form fields for a form post, the parsed object for JSON. */
  body(): Promise<Record<string, unknown>>
}

/** What a route answers. */
export interface DashboardResponse {
  status: number
  headers?: Record<string, string>
  body: string
}

/** One route: a method, a path pattern with `:name` parameters, and its handler. */
export interface Route {
  readonly method: 'GET' | 'POST'
  readonly pattern: string
  handle(request: DashboardRequest, ctx: DashboardContext): Promise<DashboardResponse>
}

/** An HTML answer. */
export function htmlResponse(body: Html, status = 200): DashboardResponse {
  return { status, headers: { 'content-type': 'text/html; charset=utf-8' }, body: body.text }
}

/** A JSON answer. */
export function jsonResponse(value: unknown, status = 200): DashboardResponse {
  return { status, headers: { 'content-type': 'application/json; charset=utf-8' }, body: JSON.stringify(value) }
}

/** A redirect after a form post (303: the browser follows it with GET). */
export function seeOther(location: string): DashboardResponse {
  return { status: 303, headers: { location }, body: '' }
}

/** True when the client asked for JSON: an /api/ path. */
export function wantsJson(request: Pick<DashboardRequest, 'path'>): boolean {
  return request.path.startsWith('/api/') || request.path === '/api'
}
