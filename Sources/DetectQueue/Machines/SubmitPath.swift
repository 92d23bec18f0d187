import Postgres

/// How a request's media went to the API, kept in `detectq.requests.submit_path`.
package enum SubmitPath: String, Sendable, Hashable, CaseIterable, PostgresEncodable, PostgresDecodable {
    /// `media_url`, sent as the JSON body's `url`.
    case url
    /// A `media_path` file up to 150 MB, streamed as `multipart/form-data`.
    case multipart
    /// A `media_path` file over 150 MB, uploaded through `POST /secure_uploads` and sent as its token.
    case secureUpload = "secure_upload"
    /// The producer's own `media_token`.
    case mediaToken = "media_token"
    /// Not sent: the verdict of a request with identical media and options was reused (`reused_from`).
    case reused
}
