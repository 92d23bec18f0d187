import ArgumentParser
import InputNumbers

/// Command-line options given in seconds, read by `InputNumbers` so that no value (`1e300`, `inf`) can trap:
/// a value outside the option's range is refused with a message naming the option.
enum SecondsOption {
    /// A transform for `@Option(transform:)`: seconds in `range`, as a duration.
    static func parser(_ option: String, in range: ClosedRange<Duration>) -> @Sendable (String) throws -> Duration {
        { text in
            do {
                return try InputNumbers.seconds(text, from: option, in: range)
            } catch {
                throw ValidationError(String(describing: error))
            }
        }
    }
}
