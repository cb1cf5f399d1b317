// OpenTelemetry tracing (@opentelemetry/sdk-node), off by default. One server span per request
// (HTTP semantic conventions; the route is the bucket prefix, never the key) with children for
// JWT verification, the OPA decision, cache lookups and each backend call. Spans are exported over
// OTLP/HTTP (protobuf or JSON) in batches. The provider is the proxy's own, not the process-global
// one, so two proxies in one process (tests) never share spans. With tracing off nothing here
// runs: the stages check for a span first.
import { OTLPTraceExporter as OtlpJsonExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { OTLPTraceExporter as OtlpProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto'
import { api, core, node, resources, tracing } from '@opentelemetry/sdk-node'
import type { TracingConfig } from '../config/schema.ts'
import type { SpanAttributes, Tracer, TraceSpan } from '../ports.ts'
import { VERSION } from '../version.ts'

export function createTracer(config: TracingConfig): Tracer {
  // A base URL gets the signal path appended, as OTEL_EXPORTER_OTLP_ENDPOINT does; without one,
  // the exporter reads the standard OTEL_EXPORTER_OTLP_* variables.
  const url = config.otlp_endpoint === undefined ? undefined : `${config.otlp_endpoint.replace(/\/+$/, '')}/v1/traces`
  const exporter = config.protocol === 'http/json' ? new OtlpJsonExporter({ url }) : new OtlpProtoExporter({ url })
  const provider = new node.NodeTracerProvider({
    resource: resources.resourceFromAttributes({ 'service.name': config.service_name, 'service.version': VERSION }),
    sampler: new tracing.ParentBasedSampler({ root: new tracing.TraceIdRatioBasedSampler(config.sampling_ratio) }),
    spanProcessors: [new tracing.BatchSpanProcessor(exporter)],
  })
  const tracer = provider.getTracer('yatagarasu', VERSION)
  const propagator = new core.W3CTraceContextPropagator()

  return {
    startRequest(name, headers, attributes) {
      const parent = propagator.extract(api.ROOT_CONTEXT, headers, api.defaultTextMapGetter)
      return new OtelSpan(tracer, tracer.startSpan(name, { kind: api.SpanKind.SERVER, attributes: defined(attributes) }, parent))
    },
    async close() {
      await provider.shutdown()
    },
  }
}

class OtelSpan implements TraceSpan {
  readonly #tracer: api.Tracer
  readonly #span: api.Span

  constructor(tracer: api.Tracer, span: api.Span) {
    this.#tracer = tracer
    this.#span = span
  }

  get traceId(): string {
    return this.#span.spanContext().traceId
  }

  child(name: string, attributes: SpanAttributes = {}): TraceSpan {
    const context = api.trace.setSpan(api.ROOT_CONTEXT, this.#span)
    const kind = name.startsWith('s3.') ? api.SpanKind.CLIENT : api.SpanKind.INTERNAL
    return new OtelSpan(this.#tracer, this.#tracer.startSpan(name, { kind, attributes: defined(attributes) }, context))
  }

  set(attributes: SpanAttributes): void {
    this.#span.setAttributes(defined(attributes))
  }

  fail(error: unknown): void {
    const code = (error as { code?: unknown } | undefined)?.code
    const label = typeof code === 'string' ? code : error instanceof Error ? error.name : 'error'
    this.#span.setAttribute('error.type', label)
    this.#span.setStatus({ code: api.SpanStatusCode.ERROR, message: label })
  }

  end(): void {
    this.#span.end()
  }
}

function defined(attributes: SpanAttributes): api.Attributes {
  const out: api.Attributes = {}
  for (const [key, value] of Object.entries(attributes)) if (value !== undefined) out[key] = value
  return out
}
