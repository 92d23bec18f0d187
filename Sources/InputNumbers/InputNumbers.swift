import Foundation

/// Reads the numbers that come from outside the process (HTTP headers, environment settings, config files,
/// command-line options) as durations, counts and amounts.
///
/// Whatever the text (`1e300`, `inf`, `nan`, `-0`, forty digits, a hex float), the answer is a value inside
/// the range the caller gave, or an ``InputNumberError`` that names the source and what it expected. Nothing
/// here can trap, so no input from outside can stop the process.
package enum InputNumbers {
    /// What a well-formed number outside the range becomes.
    package enum OutOfRange: Sendable {
        /// It is an error, like text that is not a number.
        case refuse
        /// It is the nearest end of the range (an `Infinity` is the upper end).
        case clamp
    }

    /// A whole number such as `100` or `-3`, in `range`.
    package static func count(
        _ text: String, from source: String, in range: ClosedRange<Int>, outOfRange: OutOfRange = .refuse
    ) throws(InputNumberError) -> Int {
        let refusal = InputNumberError(source: source, expected: "a whole number from \(range.lowerBound) to \(range.upperBound)")
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let digits = trimmed.first == "-" || trimmed.first == "+" ? trimmed.dropFirst() : Substring(trimmed)
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { throw refusal }
        // Too many digits for an Int is still a number: far beyond one end of the range.
        return try bounded(Int(trimmed) ?? (trimmed.first == "-" ? Int.min : Int.max), in: range, outOfRange, else: refusal)
    }

    /// A decimal number such as `0.2` or `40`, in `range`.
    package static func amount(
        _ text: String, from source: String, in range: ClosedRange<Double>, outOfRange: OutOfRange = .refuse
    ) throws(InputNumberError) -> Double {
        let refusal = InputNumberError(source: source, expected: "a number from \(describe(range.lowerBound)) to \(describe(range.upperBound))")
        guard let value = Double(text.trimmingCharacters(in: .whitespaces)), !value.isNaN else { throw refusal }
        return try bounded(value, in: range, outOfRange, else: refusal)
    }

    /// A number of seconds such as `30` or `0.25`, as a duration in `range`.
    package static func seconds(
        _ text: String, from source: String, in range: ClosedRange<Duration>, outOfRange: OutOfRange = .refuse
    ) throws(InputNumberError) -> Duration {
        guard let value = Double(text.trimmingCharacters(in: .whitespaces)) else {
            throw InputNumberError(source: source, expected: "a number of seconds from \(describe(range))")
        }
        return try duration(seconds: value, from: source, in: range, outOfRange: outOfRange)
    }

    /// A duration as people write it: seconds, or a number followed by `s`, `m`, `h` or `d` (`90m`, `24h`,
    /// `30d`), in `range`.
    package static func duration(
        _ text: String, from source: String, in range: ClosedRange<Duration>, outOfRange: OutOfRange = .refuse
    ) throws(InputNumberError) -> Duration {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3_600, "d": 86_400]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let unit = trimmed.last.flatMap { units[$0] }
        guard let value = Double(unit == nil ? trimmed : String(trimmed.dropLast())) else {
            throw InputNumberError(source: source, expected: "a duration such as 3600, 90m, 24h or 7d, from \(describe(range))")
        }
        return try duration(seconds: value * (unit ?? 1), from: source, in: range, outOfRange: outOfRange)
    }

    /// `value` seconds as a duration in `range`: the one place a `Double` from outside becomes a `Duration`.
    package static func duration(
        seconds value: Double, from source: String, in range: ClosedRange<Duration>, outOfRange: OutOfRange = .refuse
    ) throws(InputNumberError) -> Duration {
        let refusal = InputNumberError(source: source, expected: "a number of seconds from \(describe(range))")
        guard !value.isNaN else { throw refusal }
        let seconds = try bounded(value, in: range.lowerBound.secondsValue...range.upperBound.secondsValue, outOfRange, else: refusal)
        // Inside a range of valid durations, so the conversion cannot overflow; clamped again against rounding.
        return min(max(.seconds(seconds), range.lowerBound), range.upperBound)
    }

    /// `value` when it is in `range`; else the nearest end when clamping, or `refusal`.
    private static func bounded<Value: Comparable>(
        _ value: Value, in range: ClosedRange<Value>, _ outOfRange: OutOfRange, else refusal: InputNumberError
    ) throws(InputNumberError) -> Value {
        if range.contains(value) { return value }
        guard outOfRange == .clamp else { throw refusal }
        return min(max(value, range.lowerBound), range.upperBound)
    }

    /// An HTTP `Retry-After` value (RFC 9110: whole seconds, or an HTTP date) as a wait from `now`, at most
    /// `longest`; nil when the value is neither. A date in the past is no wait; an absurd number is `longest`.
    package static func retryAfter(_ value: String, now: Date = Date(), longest: Duration) -> Duration? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        if !trimmed.isEmpty, trimmed.allSatisfy({ $0.isASCII && $0.isNumber }) {
            return try? duration(seconds: Double(trimmed) ?? .infinity, from: "Retry-After", in: .zero...longest, outOfRange: .clamp)
        }
        guard let date = HTTPDate.parse(trimmed) else { return nil }
        return try? duration(seconds: date.timeIntervalSince(now), from: "Retry-After", in: .zero...longest, outOfRange: .clamp)
    }

    static func describe(_ range: ClosedRange<Duration>) -> String {
        "\(describe(range.lowerBound.secondsValue)) to \(describe(range.upperBound.secondsValue))"
    }

    static func describe(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}

extension Duration {
    /// The duration in seconds, as a `Double` (named apart from `ResembleDetect`'s public `seconds`).
    var secondsValue: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
