import { html } from '../html.js'
import { href, page } from '../page.js'
import { htmlResponse, seeOther, type DashboardContext, type Route } from '../routes.js'

function loginPage(ctx: DashboardContext, failed: boolean) {
  return page(ctx, 'sign in', html`<h1>Sign in</h1>
    <p>This dashboard needs its token (the <code>--token</code> it was started with).</p>
    ${failed ? html`<p class="error" role="alert">That is not the token.</p>` : ''}
    <form method="post" action="${href(ctx, '/login')}">
      <label>token <input type="password" name="token" autocomplete="current-password" autofocus></label>
      <button type="submit">Sign in</button>
    </form>`)
}

/** `/login`: where a browser enters the token and gets the session cookie. */
export const loginRoutes: Route[] = [
  { method: 'GET', pattern: '/login', handle: async (_request, ctx) => htmlResponse(loginPage(ctx, false)) },
  {
    method: 'POST',
    pattern: '/login',
    async handle(request, ctx) {
      const { token } = await request.body()
      if (typeof token !== 'string' || !ctx.access.tokenMatches(token)) return htmlResponse(loginPage(ctx, true), 401)
      const response = seeOther(href(ctx, '/'))
      return { ...response, headers: { ...response.headers, 'set-cookie': ctx.access.sessionCookie(ctx.basePath) } }
    },
  },
]
