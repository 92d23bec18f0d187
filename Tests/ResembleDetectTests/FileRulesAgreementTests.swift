@testable import DetectSimulator
import ResembleDetect
import Testing

/// The client checks files before sending them (`MediaFileConstraints`) and the simulator judges what arrives
/// (`APIFileRules`); each is written from the API's pages on its own, so each checks the other, and both are
/// checked against the pages' own words, quoted here.
@Suite("The client's and the simulator's file rules agree with the API's pages")
struct FileRulesAgreementTests {
    /// `submit-detection-job.md`: "Maximum 150 MB; allowed extensions are `.wav`, `.mp3`, `.m4a`, `.ogg`,
    /// `.aac`, `.flac`, `.amr`, `.3gp`, `.3gpp`, `.mp4`, `.mov`, `.avi`, `.mkv`, `.webm`, `.jpg`, `.jpeg`,
    /// `.png`, `.gif`, `.webp`."
    static let pages: Set<String> = ["wav", "mp3", "m4a", "ogg", "aac", "flac", "amr", "3gp", "3gpp", "mp4", "mov", "avi",
                                     "mkv", "webm", "jpg", "jpeg", "png", "gif", "webp"]

    @Test func theExtensionsAndTheCapAreThePages() {
        #expect(MediaFileConstraints.allowedExtensions == Self.pages)
        #expect(APIFileRules.allowedExtensions == Self.pages)
        #expect(MediaFileConstraints.directUploadLimit == 150_000_000 && APIFileRules.directUploadLimit == 150_000_000)
    }

    @Test(arguments: FileRulesAgreementTests.pages.sorted())
    func eachExtensionIsTheSameMediaTypeAndTakesTheSameContentTypes(ext: String) {
        let client: MediaType? = MediaFileConstraints.audioExtensions.contains(ext) ? .audio
            : MediaFileConstraints.videoExtensions.contains(ext) ? .video
            : MediaFileConstraints.imageExtensions.contains(ext) ? .image : nil
        #expect(client != nil && client == APIFileRules.mediaType(forExtension: ext))
        for type in ["audio/mpeg", "video/mp4", "image/png", "application/octet-stream", "text/plain"] {
            #expect(MediaFileConstraints.accepts(contentType: type, forFileName: "a.\(ext)") == APIFileRules.accepts(contentType: type, forExtension: ext),
                    "\(type) for .\(ext)")
        }
        if let contentType = MediaFileConstraints.contentType(forFileName: "a.\(ext)") {
            #expect(APIFileRules.accepts(contentType: contentType, forExtension: ext), "what the client sends for .\(ext) the simulator takes")
        }
    }
}
