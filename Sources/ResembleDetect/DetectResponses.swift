import Foundation
import TextEncodings

/// The API's envelopes around items: `{"success": true, "item": …}` and the paginated list.
package enum DetectResponses {
    /// The item of a `{success, item}` response (submit, get, callback), with its exact text kept.
    package static func item(from body: [UInt8]) throws(DetectAPIError) -> DetectionItem {
        guard let span = JSONSpan.topLevelValue(forKey: "item", in: body) else {
            throw .malformedResponse("the response has no item")
        }
        do {
            return try DetectionItem(json: String(decoding: body[span], as: UTF8.self))
        } catch {
            throw .malformedResponse("the response's item could not be read: \(error)")
        }
    }

    /// One page of `GET /detect`.
    static func page(from body: [UInt8]) throws(DetectAPIError) -> DetectionPage {
        struct Header: Decodable {
            var page: Int?
            var num_pages: Int?
            var page_size: Int?
            var total_count: Int?
        }
        guard let header = try? JSONText.decode(Header.self, from: Data(body)),
              let itemsSpan = JSONSpan.topLevelValue(forKey: "items", in: body)
        else { throw .malformedResponse("the list response has no items") }
        var items: [DetectionItem] = []
        for span in JSONSpan.arrayElements(in: body, span: itemsSpan) {
            do {
                items.append(try DetectionItem(json: String(decoding: body[span], as: UTF8.self)))
            } catch {
                throw .malformedResponse("an item of the list could not be read: \(error)")
            }
        }
        return DetectionPage(
            page: header.page ?? 1, pageCount: header.num_pages ?? 1, pageSize: header.page_size ?? items.count,
            totalCount: header.total_count ?? items.count, items: items
        )
    }
}

/// One page of the detection list.
package struct DetectionPage: Sendable {
    package var page: Int
    package var pageCount: Int
    package var pageSize: Int
    package var totalCount: Int
    package var items: [DetectionItem]

    package init(page: Int, pageCount: Int, pageSize: Int, totalCount: Int, items: [DetectionItem]) {
        self.page = page
        self.pageCount = pageCount
        self.pageSize = pageSize
        self.totalCount = totalCount
        self.items = items
    }
}
