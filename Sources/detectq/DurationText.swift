/// Durations written by people: seconds, or a number followed by `s`, `m`, `h` or `d` (`90m`, `24h`, `30d`).
enum DurationText {
    static func parse(_ text: String) -> Duration? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3_600, "d": 86_400]
        let unit = text.last.flatMap { units[$0] }
        guard let value = Double(unit == nil ? text : String(text.dropLast())), value > 0, value.isFinite else { return nil }
        return .milliseconds(Int64(value * (unit ?? 1) * 1000))
    }
}
