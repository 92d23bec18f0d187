/// PostgreSQL's text form of one-dimensional arrays: `{1,2,NULL,"a \"quoted\" value"}`.
enum PostgresArrayText {
    /// Formats elements (nil for NULL), quoting every one so that commas, braces and spaces are safe.
    static func format(_ elements: [String?]) -> String {
        var text = "{"
        for (index, element) in elements.enumerated() {
            if index > 0 { text += "," }
            guard let element else {
                text += "NULL"
                continue
            }
            text += "\""
            for character in element {
                if character == "\"" || character == "\\" { text.append("\\") }
                text.append(character)
            }
            text += "\""
        }
        return text + "}"
    }

    /// Parses a one-dimensional array; nil for malformed or multi-dimensional text.
    static func parse(_ text: String) -> [String?]? {
        var characters = Substring(text)
        if characters.first == "[" {
            // An explicit lower bound such as "[0:2]={…}": the bounds do not change the elements.
            guard let equals = characters.firstIndex(of: "=") else { return nil }
            characters = characters[characters.index(after: equals)...]
        }
        guard characters.first == "{", characters.last == "}" else { return nil }
        let body = characters.dropFirst().dropLast()
        if body.isEmpty { return [] }
        var elements: [String?] = []
        var current = ""
        var inQuotes = false
        var wasQuoted = false
        var escaped = false
        for character in body {
            if escaped {
                current.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == "\"" {
                inQuotes.toggle()
                wasQuoted = true
            } else if character == "," && !inQuotes {
                elements.append(wasQuoted || current != "NULL" ? current : nil)
                current = ""
                wasQuoted = false
            } else if character == "{" && !inQuotes {
                return nil
            } else {
                current.append(character)
            }
        }
        guard !inQuotes, !escaped else { return nil }
        elements.append(wasQuoted || current != "NULL" ? current : nil)
        return elements
    }
}
