/// A number from outside the process that could not be used: it names where the number came from (a
/// variable, a header, an option) and what was expected, and never repeats the value, which may be a secret.
package struct InputNumberError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Where the number came from, e.g. `DETECTQ_LEASE_SECONDS` or `--latency`.
    package let source: String
    /// What would have been accepted, e.g. `a number of seconds from 0.001 to 86400`.
    package let expected: String

    package init(source: String, expected: String) {
        self.source = source
        self.expected = expected
    }

    package var description: String { "\(source) must be \(expected)" }
}
