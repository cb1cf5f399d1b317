// docs/grafana-dashboard.json only queries metrics the proxy exports.
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { it } from 'node:test'
import { Metrics } from '../../src/telemetry/metrics.ts'

it('queries only metrics the proxy exports', async () => {
  const dashboard = JSON.parse(await readFile(join(import.meta.dirname, '../../docs/grafana-dashboard.json'), 'utf8')) as {
    panels: Array<{ title: string; targets: Array<{ expr: string }> }>
  }
  const exported = new Set<string>()
  for (const metric of await new Metrics().registry.getMetricsAsJSON()) {
    exported.add(metric.name)
    if (String(metric.type) === 'histogram') for (const suffix of ['_bucket', '_count', '_sum']) exported.add(metric.name + suffix)
  }
  const queried = dashboard.panels.flatMap((p) => p.targets.flatMap((t) => t.expr.replace(/by \([^)]*\)/g, '').match(/[a-z_]+(?=\{|\[|\))/g) ?? []))
  const functions = new Set(['sum', 'rate', 'increase', 'max', 'histogram_quantile', 'by', 'label_values'])
  const unknown = queried.filter((name) => !functions.has(name) && !exported.has(name))
  assert.ok(queried.length >= 12, `found ${queried.length} metric references`)
  assert.deepEqual(unknown, [])
})
