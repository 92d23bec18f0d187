import Foundation
import Mustache

/// The dashboard's Mustache templates, stylesheet, script and icon, built into the binary from `Resources/`.
/// Templates escape every `{{value}}` for HTML; only the server-drawn charts use `{{{svg}}}`.
struct DashboardRenderer: Sendable {
    private let library: MustacheLibrary

    static let stylesheet = String(decoding: PackageResources.dashboard_css, as: UTF8.self)
    static let script = String(decoding: PackageResources.dashboard_js, as: UTF8.self)
    static let icon = String(decoding: PackageResources.favicon_svg, as: UTF8.self)

    init() throws {
        var library = MustacheLibrary()
        let templates: [(String, [UInt8])] = [
            ("layout", PackageResources.layout_mustache),
            ("overview", PackageResources.overview_mustache),
            ("requests", PackageResources.requests_mustache),
            ("request", PackageResources.request_mustache),
            ("tree", PackageResources.tree_mustache),
            ("timeline", PackageResources.timeline_mustache),
            ("failures", PackageResources.failures_mustache),
            ("queues", PackageResources.queues_mustache),
            ("login", PackageResources.login_mustache),
            ("message", PackageResources.message_mustache),
        ]
        for (name, bytes) in templates {
            try library.register(String(decoding: bytes, as: UTF8.self), named: name)
        }
        self.library = library
    }

    func render(_ model: Any, template: String) -> String {
        library.render(model, withTemplate: template) ?? ""
    }
}
