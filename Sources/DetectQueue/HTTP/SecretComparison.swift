/// Compares secrets (callback secrets, dashboard tokens) without leaking, through timing, how much of a guess
/// was right.
package enum SecretComparison {
    /// Whether two strings are equal, in time that depends only on their lengths.
    package static func equal(_ left: String, _ right: String) -> Bool {
        let a = Array(left.utf8)
        let b = Array(right.utf8)
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
