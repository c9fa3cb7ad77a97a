import { PROMETHEUS_CONTENT_TYPE } from '../../metrics/postbox-metrics.js'
import type { Route } from '../routes.js'

/** `/metrics`: the Prometheus text exposition of the dashboard's Postbox (queue gauges read now). */
export const metricsRoutes: Route[] = [
  {
    method: 'GET',
    pattern: '/metrics',
    async handle(_request, ctx) {
      return { status: 200, headers: { 'content-type': PROMETHEUS_CONTENT_TYPE }, body: await ctx.postbox.metrics() }
    },
  },
]
