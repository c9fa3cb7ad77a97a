import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'

const COOKIE = 'postbox_dashboard'

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

/** Compares two strings in constant time (of their digests), so a wrong token leaks nothing by timing. */
function same(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b))
}

/** The hostname of a Host header (`localhost:8080` → `localhost`, `[::1]:80` → `::1`). */
function hostnameOf(host: string): string {
  const bracketed = /^\[([^\]]+)\]/.exec(host)
  if (bracketed) return bracketed[1] as string
  return host.replace(/:\d+$/, '')
}

/**
 * Who may use the dashboard and how requests are checked:
 *
 * - With a token, every request must present it: `Authorization: Bearer <token>` (scripts,
 *   Prometheus), or the session cookie a browser gets by entering the token on `/login`. The
 *   cookie holds an HMAC of the token, not the token; it is HttpOnly and SameSite=Strict.
 * - A POST must come from the dashboard's own origin (`Origin`/`Sec-Fetch-Site`, sent by every
 *   current browser), and a form must carry the dashboard's CSRF token; a JSON POST must be
 *   `application/json`, which a cross-site page cannot send without a CORS preflight that the
 *   dashboard never grants.
 * - When `allowedHosts` is set (the standalone server on loopback sets it), the Host header
 *   must name one of them: a page on another site cannot reach a loopback dashboard by DNS
 *   rebinding.
 */
export class Access {
  /** A random token per dashboard, embedded in its forms. */
  readonly csrfToken = randomBytes(24).toString('base64url')
  private readonly session: string | undefined

  constructor(
    private readonly token: string | undefined,
    private readonly allowedHosts: readonly string[] | null,
  ) {
    this.session = token === undefined ? undefined : createHmac('sha256', token).update('postbox dashboard session').digest('base64url')
  }

  /** Whether a token is needed at all. */
  get required(): boolean {
    return this.token !== undefined
  }

  hostAllowed(headers: IncomingHttpHeaders): boolean {
    if (this.allowedHosts === null) return true
    return headers.host !== undefined && this.allowedHosts.includes(hostnameOf(headers.host).toLowerCase())
  }

  authenticated(headers: IncomingHttpHeaders): boolean {
    if (this.token === undefined || this.session === undefined) return true
    const bearer = /^Bearer\s+(.+)$/i.exec(headers.authorization ?? '')
    if (bearer && same(bearer[1] as string, this.token)) return true
    const cookie = (headers.cookie ?? '').split(';').map((c) => c.trim()).find((c) => c.startsWith(`${COOKIE}=`))
    return cookie !== undefined && same(cookie.slice(COOKIE.length + 1), this.session)
  }

  /** Whether `given` is the token. */
  tokenMatches(given: string): boolean {
    return this.token !== undefined && same(given, this.token)
  }

  /** The Set-Cookie value that signs a browser in, for the dashboard's path. */
  sessionCookie(path: string): string {
    return `${COOKIE}=${this.session ?? ''}; Path=${path || '/'}; HttpOnly; SameSite=Strict`
  }

  /** Whether a POST comes from the dashboard's own pages (or from a script, which sends neither header). */
  sameOrigin(headers: IncomingHttpHeaders): boolean {
    const site = headers['sec-fetch-site']
    if (site !== undefined && site !== 'same-origin' && site !== 'none') return false
    const origin = headers.origin
    if (origin === undefined) return true
    // A browser sends `Origin: null` in some privacy modes; its Sec-Fetch-Site (which a page cannot forge) then decides.
    if (origin === 'null') return site === 'same-origin'
    try {
      return new URL(origin).host === headers.host
    } catch {
      return false
    }
  }
}
