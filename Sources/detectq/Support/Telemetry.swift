import DetectQueue
import Logging
import OTel
import ServiceLifecycle
import Tracing

/// OpenTelemetry for `detectq worker` (REFERENCE.md section 7): when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, the request spans are exported over OTLP/HTTP as the standard
/// `OTEL_*` variables say (protocol, service name, resource attributes, sampler, headers), and log lines carry
/// the trace and span ids (`trace_id`, `span_id`). Without an endpoint nothing is started and spans cost nothing.
enum Telemetry {
    /// The exporter's background work, to run beside the worker (it flushes the last spans when stopped).
    struct Exporting {
        let service: any Service
        let logMetadata: Logger.MetadataProvider
    }

    /// Starts the tracer when an endpoint is set; a setting this build cannot honour is a `ConfigurationError`.
    static func start(_ environment: [String: String]) throws -> Exporting? {
        let endpoints = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        guard endpoints.contains(where: { EnvironmentReader(environment).text($0) != nil }) else { return nil }
        for variable in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let value = EnvironmentReader(environment).text(variable), !["http/protobuf", "http/json"].contains(value) {
                throw ConfigurationError(variable, expected: "http/protobuf or http/json (this build exports over OTLP/HTTP only)")
            }
        }
        var configuration = OTel.Configuration.default
        configuration.serviceName = "detectq"
        configuration.metrics.enabled = false
        configuration.logs.enabled = false
        do {
            let backend = try OTel.makeTracingBackend(configuration: configuration)
            InstrumentationSystem.bootstrap(backend.factory)
            return Exporting(service: backend.service, logMetadata: OTel.makeLoggingMetadataProvider())
        } catch {
            throw ConfigurationError("OTEL_EXPORTER_OTLP_ENDPOINT", expected: "usable with the other OTEL_* settings (\(error))")
        }
    }
}
