export { createMetrics, reasonLabel, type Metrics, type MetricSources } from './metrics.js';
export { metricsRouter, serveMetricsAlone } from './endpoint.js';
