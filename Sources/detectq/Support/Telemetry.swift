import DetectQueue
import EmbeddedPostgres
import Foundation
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
        // Over http/json the exporter posts to a relay that writes the ids as hex (OTLPJSONRelay says why).
        let reader = EnvironmentReader(environment)
        let relay: OTLPJSONRelay?
        if (reader.text("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") ?? reader.text("OTEL_EXPORTER_OTLP_PROTOCOL")) == "http/json" {
            let upstream = reader.text("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") ?? {
                let base = reader.text("OTEL_EXPORTER_OTLP_ENDPOINT") ?? ""
                return base.hasSuffix("/") ? base + "v1/traces" : base + "/v1/traces"
            }()
            var relayLogger = Logger(label: "detectq.otlp-relay")
            relayLogger.logLevel = .warning
            let made = OTLPJSONRelay(upstream: upstream, port: try LoopbackPort.free(), logger: relayLogger)
            setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", made.endpoint, 1)
            relay = made
        } else {
            relay = nil
        }
        do {
            let backend = try OTel.makeTracingBackend(configuration: configuration)
            InstrumentationSystem.bootstrap(backend.factory)
            // The relay stops after the exporter, which flushes its last spans through it.
            let service: any Service = relay.map {
                ServiceGroup(configuration: .init(services: [$0, backend.service], logger: Logger(label: "detectq.telemetry")))
            } ?? backend.service
            return Exporting(service: service, logMetadata: OTel.makeLoggingMetadataProvider())
        } catch {
            throw ConfigurationError("OTEL_EXPORTER_OTLP_ENDPOINT", expected: "usable with the other OTEL_* settings (\(error))")
        }
    }
}
