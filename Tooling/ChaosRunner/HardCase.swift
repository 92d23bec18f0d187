/// A request the chaos producer sends to play one of the API's hard cases (REFERENCE.md section 6), named in the
/// request's `metadata.case` so the end-of-run checks know which ending the contract promises for it.
package enum HardCase: String, CaseIterable, Sendable {
    /// A video whose audio track reads fake under a real picture: a fake, alerted with `fake_tracks ["audio"]`.
    case fakeAudio = "fake-audio"
    /// A video whose picture reads fake over real audio: a fake, alerted with `fake_tracks ["visual"]`.
    case fakeVisual = "fake-visual"
    /// The API reports the detection `failed`: the request fails once with the API's message, no alert.
    case detectionFails = "detection-fails"
    /// The detection stays `processing`: the request fails by `DETECTQ_RESULT_TIMEOUT`, naming its uuid.
    case neverFinishes = "never-finishes"
    /// The detection reports a status the pages do not name: the same ending as `neverFinishes`.
    case statusUnknown = "status-unknown"
    /// The request asks for a product the key may not use: that request alone fails on the API's 403.
    case forbiddenProduct = "forbidden-product"

    /// The optional product the chaos run's API refuses (403) and `forbiddenProduct` requests ask for.
    static let forbiddenProductName = "audio_source_tracing"

    /// The case of the `n`th request (from 1): every tenth request plays one, the cases in turn, so even a
    /// short run deals each of them several times.
    static func dealt(toRequest n: Int) -> HardCase? {
        guard n % 10 == 0 else { return nil }
        return allCases[(n / 10 - 1) % allCases.count]
    }

    /// The media URL that asks the simulator for this case (its markers), for the request keyed `key`.
    func mediaURL(key: String) -> String {
        switch self {
        case .fakeAudio, .fakeVisual: "https://media.chaos.invalid/\(key)-\(rawValue).mp4"
        case .detectionFails, .neverFinishes, .statusUnknown: "https://media.chaos.invalid/\(key)-\(rawValue).wav"
        case .forbiddenProduct: "https://media.chaos.invalid/\(key)-real.wav"
        }
    }

    /// The tracks the alert must name, for the cases that are fakes.
    var fakeTracks: [String]? {
        switch self {
        case .fakeAudio: ["audio"]
        case .fakeVisual: ["visual"]
        default: nil
        }
    }
}
