import { formatDuration } from '../duration.js'
import { html, type Html } from './html.js'

/** One line of a chart. */
export interface ChartSeries {
  label: string
  color: string
  values: readonly number[]
}

/** What to draw: sample times (epoch ms) and a value per time for each series. */
export interface ChartData {
  times: readonly number[]
  series: readonly ChartSeries[]
  /** The time span the x axis covers, ending at the last time. */
  spanMs: number
}

const round = (n: number) => Math.round(n * 10) / 10

function points(data: ChartData, values: readonly number[], width: number, height: number, max: number): string {
  const end = data.times[data.times.length - 1] ?? 0
  return values
    .map((v, i) => {
      const x = width - ((end - (data.times[i] as number)) / data.spanMs) * width
      const y = height - (v / max) * height
      return `${round(Math.max(0, x))},${round(y)}`
    })
    .join(' ')
}

/**
 * A small line chart of queue depth as inline SVG, drawn on the server: no script, no library,
 * works offline. The y axis starts at 0 and ends at the largest value shown; the x axis ends at
 * the newest sample and covers `spanMs` before it.
 */
export function depthChart(data: ChartData, size: { width: number; height: number; axes: boolean; title: string }): Html {
  const max = Math.max(1, ...data.series.flatMap((s) => s.values))
  const pad = size.axes ? { left: 44, bottom: 18, top: 6 } : { left: 0, bottom: 0, top: 2 }
  const w = size.width - pad.left
  const h = size.height - pad.bottom - pad.top
  const lines = data.series.map((s) =>
    s.values.length === 1
      ? html`<circle cx="${w}" cy="${round(h - ((s.values[0] as number) / max) * h)}" r="2" fill="${s.color}"/>`
      : html`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" stroke-linejoin="round" points="${points(data, s.values, w, h, max)}"/>`,
  )
  const axes = size.axes
    ? html`<g font-size="10" fill="#666">
        <text x="${pad.left - 4}" y="${pad.top + 8}" text-anchor="end">${max}</text>
        <text x="${pad.left - 4}" y="${pad.top + h}" text-anchor="end">0</text>
        <text x="${pad.left}" y="${size.height - 4}">${formatDuration(data.spanMs)} ago</text>
        <text x="${size.width}" y="${size.height - 4}" text-anchor="end">now</text>
      </g>
      <line x1="${pad.left}" y1="${pad.top + h}" x2="${size.width}" y2="${pad.top + h}" stroke="#ccc"/>`
    : ''
  return html`<svg class="chart" role="img" width="${size.width}" height="${size.height}" viewBox="0 0 ${size.width} ${size.height}" xmlns="http://www.w3.org/2000/svg"><title>${size.title}</title>${axes}<g transform="translate(${pad.left},${pad.top})">${lines}</g></svg>`
}
