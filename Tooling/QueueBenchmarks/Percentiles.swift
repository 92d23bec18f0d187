extension Array where Element == Double {
    /// The value at fraction `p` of these values in ascending order (the nearest rank at or above it; NaN for
    /// none). The benchmarks' latency percentiles.
    func percentile(_ p: Double) -> Double {
        let sorted = self.sorted()
        return sorted.isEmpty ? .nan : sorted[Swift.min(sorted.count - 1, Int(Double(sorted.count) * p))]
    }
}
