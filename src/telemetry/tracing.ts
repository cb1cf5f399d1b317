// OpenTelemetry tracing (@opentelemetry/sdk-node), off by default. One server span per request
// (HTTP semantic conventions; the route is the bucket prefix, never the key) with children for
// JWT verification, the OPA decision, cache lookups and each backend call. Spans are exported over
// OTLP/HTTP (protobuf or JSON) in batches. The provider is the proxy's own, not the process-global
// one, so two proxies in one process (tests) never share spans. With tracing off nothing here
// runs (the stages check for a span first) and nothing of the SDK is even loaded: it is imported
// by `loadTracing`, only when the config turns tracing on (the SDK and an exporter hold ~12 MB).
import type * as Sdk from '@opentelemetry/sdk-node'
import type { TracingConfig } from '../config/schema.ts'
import type { SpanAttributes, Tracer, TraceSpan } from '../ports.ts'
import { VERSION } from '../version.ts'

type Api = typeof Sdk.api

/** Loads the SDK and the configured exporter, and returns the factory of tracers for `config`. */
export async function loadTracing(config: TracingConfig): Promise<() => Tracer> {
  const [sdk, { OTLPTraceExporter }] = await Promise.all([
    import('@opentelemetry/sdk-node'),
    config.protocol === 'http/json' ? import('@opentelemetry/exporter-trace-otlp-http') : import('@opentelemetry/exporter-trace-otlp-proto'),
  ])
  return () => createTracer(config, sdk, OTLPTraceExporter)
}

function createTracer(config: TracingConfig, sdk: typeof Sdk, Exporter: new (options: { url: string | undefined }) => Sdk.tracing.SpanExporter): Tracer {
  const { api, core, node, resources, tracing } = sdk
  // A base URL gets the signal path appended, as OTEL_EXPORTER_OTLP_ENDPOINT does; without one,
  // the exporter reads the standard OTEL_EXPORTER_OTLP_* variables.
  const url = config.otlp_endpoint === undefined ? undefined : `${config.otlp_endpoint.replace(/\/+$/, '')}/v1/traces`
  const provider = new node.NodeTracerProvider({
    resource: resources.resourceFromAttributes({ 'service.name': config.service_name, 'service.version': VERSION }),
    sampler: new tracing.ParentBasedSampler({ root: new tracing.TraceIdRatioBasedSampler(config.sampling_ratio) }),
    spanProcessors: [new tracing.BatchSpanProcessor(new Exporter({ url }))],
  })
  const tracer = provider.getTracer('yatagarasu', VERSION)
  const propagator = new core.W3CTraceContextPropagator()

  return {
    startRequest(name, headers, attributes) {
      const parent = propagator.extract(api.ROOT_CONTEXT, headers, api.defaultTextMapGetter)
      return new OtelSpan(api, tracer, tracer.startSpan(name, { kind: api.SpanKind.SERVER, attributes: defined(attributes) }, parent))
    },
    async close() {
      await provider.shutdown()
    },
  }
}

class OtelSpan implements TraceSpan {
  readonly #api: Api
  readonly #tracer: Sdk.api.Tracer
  readonly #span: Sdk.api.Span

  constructor(api: Api, tracer: Sdk.api.Tracer, span: Sdk.api.Span) {
    this.#api = api
    this.#tracer = tracer
    this.#span = span
  }

  get traceId(): string {
    return this.#span.spanContext().traceId
  }

  child(name: string, attributes: SpanAttributes = {}): TraceSpan {
    const api = this.#api
    const context = api.trace.setSpan(api.ROOT_CONTEXT, this.#span)
    const kind = name.startsWith('s3.') ? api.SpanKind.CLIENT : api.SpanKind.INTERNAL
    return new OtelSpan(api, this.#tracer, this.#tracer.startSpan(name, { kind, attributes: defined(attributes) }, context))
  }

  set(attributes: SpanAttributes): void {
    this.#span.setAttributes(defined(attributes))
  }

  fail(error: unknown): void {
    const code = (error as { code?: unknown } | undefined)?.code
    const label = typeof code === 'string' ? code : error instanceof Error ? error.name : 'error'
    this.#span.setAttribute('error.type', label)
    this.#span.setStatus({ code: this.#api.SpanStatusCode.ERROR, message: label })
  }

  end(): void {
    this.#span.end()
  }
}

function defined(attributes: SpanAttributes): Sdk.api.Attributes {
  const out: Sdk.api.Attributes = {}
  for (const [key, value] of Object.entries(attributes)) if (value !== undefined) out[key] = value
  return out
}
