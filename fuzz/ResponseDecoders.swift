import Foundation

/// The libFuzzer entry point for `scripts/fuzz.sh`: one input through every decoder of what the API sends
/// (the `{success, item}` envelope, a list page, an error body and a `Retry-After`). It is compiled together
/// with the decoding files of `Sources/ResembleDetect`, as one module, so it reaches their internals.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResponseDecoders(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: start, count: count))
    _ = try? DetectResponses.item(from: bytes)
    _ = try? DetectResponses.page(from: bytes)
    let secret = "sk-fuzz-secret-token"
    let error = DetectAPIError.from(status: 429, body: bytes, retryAfter: String(decoding: bytes.prefix(40), as: UTF8.self), secrets: [secret])
    if error.description.contains(secret) { fatalError("the secret leaked into an error: \(error.description)") }
    return 0
}
