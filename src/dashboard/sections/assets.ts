import type { Route } from '../routes.js'

// The dashboard's only stylesheet and script, served by itself: no CDN, no build step.

const CSS = `
:root { font: 14px/1.4 system-ui, sans-serif; color: #222; }
body { margin: 0; }
header { display: flex; gap: 1.5em; align-items: baseline; padding: .6em 1.2em; background: #1f2d3d; color: #eee; }
header a.brand { color: #fff; font-weight: 700; text-decoration: none; font-size: 1.2em; }
header code { color: #fff; }
header nav.sections a { color: #cde; margin-right: .8em; }
.mode { margin-left: auto; padding: .1em .6em; border-radius: 1em; font-size: .85em; }
.mode.read-only { background: #44546a; }
.mode.actions { background: #b54708; }
main { padding: .5em 1.2em 2em; max-width: 1200px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; }
th, td { padding: .3em .7em; border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: top; }
th { font-weight: 600; color: #555; font-size: .9em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:hover td { background: #f6f8fa; }
a { color: #1a56b0; }
a.dead { color: #b42318; font-weight: 600; }
.tag { font-size: .75em; padding: .05em .5em; border-radius: 1em; background: #fee4e2; color: #b42318; vertical-align: middle; }
.tag.paused { background: #fef0c7; color: #93370d; }
.muted, .empty { color: #777; }
.rates { display: flex; gap: 1.5em; flex-wrap: wrap; align-items: baseline; }
.error, .error-text { color: #b42318; }
.notice { background: #ecfdf3; border: 1px solid #abefc6; padding: .4em .8em; display: inline-block; }
dl.counts { display: flex; gap: 2em; margin: .5em 0; }
dl.counts div { display: flex; flex-direction: column-reverse; }
dl.counts dt { color: #777; font-size: .85em; } dl.counts dd { margin: 0; font-size: 1.5em; font-variant-numeric: tabular-nums; }
figure { margin: .5em 0; } figcaption { font-size: .85em; color: #555; display: flex; gap: 1em; }
.legend i { display: inline-block; width: .8em; height: .8em; margin-right: .3em; vertical-align: middle; }
.swatch-ready { background: #3366cc; } .swatch-in-flight { background: #dc8a00; } .swatch-delayed { background: #7a7a7a; }
nav.tabs { display: flex; gap: 1em; margin: .5em 0; } nav.tabs a.current { font-weight: 600; color: #222; text-decoration: none; }
details summary { cursor: pointer; } details pre { max-width: 60em; overflow: auto; background: #f6f8fa; padding: .5em; }
td code { font-size: .9em; }
td.time { white-space: nowrap; }
td.error-text pre { color: #555; font-size: .85em; }
form.redrive { display: flex; gap: 1em; align-items: center; padding: .6em; background: #fff8ed; border: 1px solid #fedf89; width: fit-content; }
button { padding: .3em 1em; }
svg.chart { display: block; }
`

// Refreshes every element with data-refresh from that URL every few seconds while the page is
// visible; the server renders the fragment, so this script never touches user data itself.
const JS = `
const every = 5000
async function refresh() {
  if (document.hidden) return
  for (const el of document.querySelectorAll('[data-refresh]')) {
    try {
      const res = await fetch(el.dataset.refresh, { credentials: 'same-origin' })
      if (res.ok) el.innerHTML = await res.text()
    } catch {}
  }
}
setInterval(refresh, every)
`

const cached = (type: string, body: string) => ({ status: 200, headers: { 'content-type': type, 'cache-control': 'max-age=300' }, body })

/** The stylesheet and the refresh script. */
export const assetRoutes: Route[] = [
  { method: 'GET', pattern: '/assets/dashboard.css', handle: async () => cached('text/css; charset=utf-8', CSS) },
  { method: 'GET', pattern: '/assets/dashboard.js', handle: async () => cached('text/javascript; charset=utf-8', JS) },
]
