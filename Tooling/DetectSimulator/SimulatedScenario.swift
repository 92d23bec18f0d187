/// What a simulated detection will show, chosen per request by markers in its URL (or, for an upload, by
/// the marker `FAKE` in its bytes), so that tests and demos can play each of the API's hard cases:
///
/// - `fake-audio`: the audio track reads fake, the picture real (a cloned voice over real footage);
/// - `fake-visual`: the picture reads fake, the audio real;
/// - `fake` (otherwise): every track reads fake;
/// - `detection-fails`: the detection ends `failed`, with an `error_message`;
/// - `never-finishes`: it stays `processing` for ever;
/// - `status-unknown`: it reports a status the pages do not name (`queued_for_review`) for ever;
/// - `unreadable-label`: it completes, but every track's label is one no reader can act on (`inconclusive`).
package struct SimulatedScenario: Sendable, Hashable {
    /// How the detection ends.
    package enum Ending: Sendable, Hashable {
        case completes
        case fails(message: String)
        case neverFinishes
        case unknownStatus(String)
    }

    package var fakeAudio: Bool
    package var fakePicture: Bool
    package var ending: Ending
    /// Every track's label is `inconclusive`, which reads neither fake nor real.
    package var unreadableLabels: Bool

    package init(fakeAudio: Bool = false, fakePicture: Bool = false, ending: Ending = .completes, unreadableLabels: Bool = false) {
        self.fakeAudio = fakeAudio
        self.fakePicture = fakePicture
        self.ending = ending
        self.unreadableLabels = unreadableLabels
    }

    /// The label an unreadable track carries.
    package static let unreadableLabel = "inconclusive"

    /// The message a `detection-fails` detection carries.
    package static let failureMessage = "The media could not be analysed: no decodable audio or video stream"

    /// The scenario a URL's (or a file name's) markers ask for.
    package init(markers text: String) {
        let text = text.lowercased()
        if text.contains("fake-audio") {
            self.init(fakeAudio: true)
        } else if text.contains("fake-visual") {
            self.init(fakePicture: true)
        } else {
            let fake = text.contains("fake")
            self.init(fakeAudio: fake, fakePicture: fake)
        }
        unreadableLabels = text.contains("unreadable-label")
        if text.contains("detection-fails") {
            ending = .fails(message: Self.failureMessage)
        } else if text.contains("never-finishes") {
            ending = .neverFinishes
        } else if text.contains("status-unknown") {
            ending = .unknownStatus("queued_for_review")
        }
    }

    /// Whether any track reads fake.
    var isFake: Bool { fakeAudio || fakePicture }
}
