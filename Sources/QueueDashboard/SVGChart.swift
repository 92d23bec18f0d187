import Foundation

/// Small inline SVG charts, drawn on the server so the pages need no script to show them. Every figure is a
/// number formatted here and every label goes through `HTMLText.escape`; colours come from the stylesheet's
/// classes. Each mark carries a `<title>`, which browsers show on hover.
enum SVGChart {
    /// One bar of a bar chart.
    struct Bar: Sendable, Hashable {
        var label: String
        var value: Int
    }

    static let width = 640.0
    static let height = 170.0
    private static let left = 40.0
    private static let right = 8.0
    private static let top = 10.0
    private static let bottom = 22.0

    /// A bar per entry, with the axis labelled every `labelEvery` bars. `style` names the bars' CSS class.
    static func bars(_ bars: [Bar], title: String, style: String, labelEvery: Int = 10) -> String {
        let maximum = niceCeiling(Double(bars.map(\.value).max() ?? 0))
        let plotWidth = width - left - right
        let plotHeight = height - top - bottom
        let step = plotWidth / Double(max(bars.count, 1))
        var svg = open(title: title)
        svg += grid(maximum: maximum, format: { String(Int($0)) })
        for (index, bar) in bars.enumerated() {
            let barHeight = maximum > 0 ? plotHeight * Double(bar.value) / maximum : 0
            let x = left + Double(index) * step
            svg += #"<rect class="\#(style)" x="\#(number(x + 0.5))" y="\#(number(top + plotHeight - barHeight))" "#
                + #"width="\#(number(max(step - 1, 1)))" height="\#(number(barHeight))"><title>"#
                + HTMLText.escape("\(bar.label): \(bar.value)") + "</title></rect>"
            if index % labelEvery == 0 {
                svg += #"<text class="tick" x="\#(number(x))" y="\#(number(height - 6))">\#(HTMLText.escape(bar.label))</text>"#
            }
        }
        return svg + "</svg>"
    }

    /// Scores from 0 to 1, one per window, joined by a line, with `threshold` drawn across; points above it
    /// are marked fake.
    static func scores(_ scores: [Double], title: String, threshold: Double = 0.5, windowLabel: (Int) -> String) -> String {
        let plotWidth = width - left - right
        let plotHeight = height - top - bottom
        let step = scores.count > 1 ? plotWidth / Double(scores.count - 1) : 0
        func point(_ index: Int, _ score: Double) -> (Double, Double) {
            let clamped = min(max(score.isFinite ? score : 0, 0), 1)
            return (left + (scores.count > 1 ? Double(index) * step : plotWidth / 2), top + plotHeight * (1 - clamped))
        }
        var svg = open(title: title)
        svg += grid(maximum: 1, format: { String(format: "%.1f", $0) })
        let thresholdY = top + plotHeight * (1 - threshold)
        svg += #"<line class="threshold" x1="\#(number(left))" x2="\#(number(width - right))" y1="\#(number(thresholdY))" y2="\#(number(thresholdY))"/>"#
        let path = scores.enumerated().map { index, score in
            let (x, y) = point(index, score)
            return "\(index == 0 ? "M" : "L")\(number(x)) \(number(y))"
        }.joined(separator: " ")
        if scores.count > 1 { svg += #"<path class="line" d="\#(path)"/>"# }
        let labelEvery = max(1, scores.count / 8)
        for (index, score) in scores.enumerated() {
            let (x, y) = point(index, score)
            let style = score > threshold ? "point point-fake" : "point"
            svg += #"<circle class="\#(style)" cx="\#(number(x))" cy="\#(number(y))" r="3.5"><title>"#
                + HTMLText.escape("\(windowLabel(index)): \(Formatting.score(score))") + "</title></circle>"
            if index % labelEvery == 0 {
                svg += #"<text class="tick" x="\#(number(x - 6))" y="\#(number(height - 6))">\#(HTMLText.escape(windowLabel(index)))</text>"#
            }
        }
        return svg + "</svg>"
    }

    private static func open(title: String) -> String {
        #"<svg class="chart" viewBox="0 0 \#(number(width)) \#(number(height))" role="img" aria-label="\#(HTMLText.escape(title))" xmlns="http://www.w3.org/2000/svg">"#
            + "<title>\(HTMLText.escape(title))</title>"
    }

    /// Horizontal lines at 0, half and the maximum, labelled on the left.
    private static func grid(maximum: Double, format: (Double) -> String) -> String {
        let plotHeight = height - top - bottom
        var svg = ""
        for fraction in [0.0, 0.5, 1.0] {
            let y = top + plotHeight * (1 - fraction)
            svg += #"<line class="grid" x1="\#(number(left))" x2="\#(number(width - right))" y1="\#(number(y))" y2="\#(number(y))"/>"#
            svg += #"<text class="tick" x="\#(number(left - 6))" y="\#(number(y + 4))" text-anchor="end">\#(HTMLText.escape(format(maximum * fraction)))</text>"#
        }
        return svg
    }

    /// The smallest of 1, 2, 5 × 10ⁿ (or an even number below 10) at or above `value`, so gridlines are round.
    static func niceCeiling(_ value: Double) -> Double {
        guard value > 0 else { return 2 }
        if value <= 10 { return (value / 2).rounded(.up) * 2 }
        let magnitude = pow(10, (log10(value)).rounded(.down))
        for factor in [1.0, 2.0, 5.0, 10.0] where factor * magnitude >= value {
            return factor * magnitude
        }
        return 10 * magnitude
    }

    private static func number(_ value: Double) -> String {
        String(format: "%.1f", value)
    }
}
