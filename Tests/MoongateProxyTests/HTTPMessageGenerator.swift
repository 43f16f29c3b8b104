/// Edge cases a generated message may carry. A message with none of them is plain RFC 9112; the
/// differential test requires both parsers to agree on those, and accepts a disagreement only when
/// one of the message's variants is listed in `ParserDifferentialTests.knownDifferences`.
enum MessageVariant: String, CaseIterable, Hashable, Sendable {
    case leadingEmptyLine, lfOnlyLines, obsFold, spaceBeforeColon, bareCRInValue, controlInValue
    case obsTextValue, longField, duplicateFields, mixedCaseNames, whitespaceAroundValue, emptyValue
    case customMethod, absoluteTarget, asteriskTarget, http10, unsupportedVersion
    case chunkExtension, chunkExtensionAfterSpace, chunkSizeLeadingZeros, uppercaseHexSize, trailers
    case contentLengthWithChunked, differingContentLengths, repeatedContentLength, contentLengthList
    case codingListWithChunked, chunkedCapitalised, bareLFChunkLine, missingCRLFAfterData
    case reasonPhraseEmpty, informationalFirst, noContentWithLength
}

/// A seeded generator of HTTP/1.1 requests and responses, valid ones and the edge cases of
/// ``MessageVariant`` (each drawn with a small probability, so most messages carry zero or one).
struct HTTPMessageGenerator {
    struct Message {
        var bytes: [UInt8]
        var variants: Set<MessageVariant>
        var text: String { String(decoding: bytes, as: UTF8.self).debugDescription }
    }

    private var rng: SplitMix64
    private var variants: Set<MessageVariant> = []

    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    private mutating func below(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
    private mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    private mutating func pick<T>(_ options: [T]) -> T { options[below(options.count)] }

    /// `variant` is drawn with `percent` probability and recorded when it is.
    private mutating func maybe(_ variant: MessageVariant, _ percent: Int = 3) -> Bool {
        guard chance(percent) else { return false }
        variants.insert(variant)
        return true
    }

    mutating func request() -> Message {
        variants = []
        var text = ""
        if maybe(.leadingEmptyLine) { text += "\r\n" }
        var method = pick(["GET", "GET", "POST", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
        if maybe(.customMethod) { method = pick(["FROB", "get", "X-CUSTOM"]) }
        var target = pick(["/", "/index.html", "/a/b?c=d&e=f", "/%7Euser", "/search?q=" + String(repeating: "x", count: below(40))])
        if maybe(.absoluteTarget) { target = "http://example.com:8080/x?y" }
        if method == "OPTIONS" && maybe(.asteriskTarget, 30) { target = "*" }
        var version = "HTTP/1.1"
        if maybe(.http10, 5) { version = "HTTP/1.0" }
        if maybe(.unsupportedVersion, 2) { version = pick(["HTTP/1.2", "HTTP/2.0", "HTTP/0.9"]) }
        text += "\(method) \(target) \(version)\r\n"
        text += fields(host: true)
        text += body(allowChunked: true)
        return finish(text)
    }

    mutating func response() -> Message {
        variants = []
        var text = ""
        if maybe(.informationalFirst, 5) { text += "HTTP/1.1 100 Continue\r\n\r\n" }
        let code = pick([200, 200, 200, 201, 204, 301, 304, 404, 500, 503])
        let reason = maybe(.reasonPhraseEmpty) ? "" : " " + pick(["OK", "Fine Thanks", "Whatever", "Ünïcode"])
        text += "HTTP/1.\(maybe(.http10, 5) ? 0 : 1) \(code)\(reason)\r\n"
        text += fields(host: false)
        if (code == 204 || code == 304) {
            if maybe(.noContentWithLength, 20) { text += "Content-Length: 10\r\n" }
            return finish(text + "\r\n")
        }
        text += body(allowChunked: true)
        return finish(text)
    }

    private mutating func finish(_ text: String) -> Message {
        var bytes = Array(text.utf8)
        if maybe(.lfOnlyLines, 2) {
            var out: [UInt8] = []
            for (i, b) in bytes.enumerated() where !(b == 13 && i + 1 < bytes.count && bytes[i + 1] == 10) { out.append(b) }
            bytes = out
        }
        return Message(bytes: bytes, variants: variants)
    }

    private mutating func fields(host: Bool) -> String {
        var lines: [String] = []
        if host { lines.append("Host: example.com") }
        for _ in 0..<below(5) {
            var name = pick(["Accept", "User-Agent", "X-Trace-Id", "Cache-Control", "Cookie", "X-Empty"])
            if maybe(.mixedCaseNames, 10) { name = pick([name.uppercased(), name.lowercased()]) }
            var value = pick(["text/html", "curl/8.5", "abc-123", "no-cache, max-age=0", "a=b; c=d"])
            if maybe(.emptyValue) { value = "" }
            if maybe(.whitespaceAroundValue, 5) { value = pick([" ", "\t", "  "]) + value + pick([" ", "\t", ""]) }
            if maybe(.obsTextValue) { value += "caf\u{E9}" }
            if maybe(.longField, 2) { value += String(repeating: "v", count: 4000) }
            if maybe(.controlInValue, 2) { value += pick(["\u{1}", "\u{0}", "\u{7F}", "\u{B}"]) + "z" }
            if maybe(.bareCRInValue, 2) { value += "\rX-Injected: 1" }
            var line = name + ":" + (value.isEmpty ? "" : " ") + value
            if maybe(.spaceBeforeColon, 2) { line = name + " : " + value }
            lines.append(line)
            if maybe(.duplicateFields, 5) { lines.append(name + ": second") }
            if maybe(.obsFold, 2) { lines.append(pick([" ", "\t"]) + "folded") }
        }
        return lines.map { $0 + "\r\n" }.joined()
    }

    /// The framing fields, the blank line and the body.
    private mutating func body(allowChunked: Bool) -> String {
        let content = String(repeating: pick(["a", "0", "Z"]), count: below(30))
        if allowChunked && chance(35) {
            var head = maybe(.chunkedCapitalised, 5) ? "Transfer-Encoding: Chunked\r\n" : "Transfer-Encoding: chunked\r\n"
            if maybe(.codingListWithChunked, 2) { head = "Transfer-Encoding: gzip, chunked\r\n" }
            if maybe(.contentLengthWithChunked, 2) { head += "Content-Length: \(content.utf8.count)\r\n" }
            var chunks = ""
            var rest = Substring(content)
            while !rest.isEmpty {
                let part = rest.prefix(1 + below(12))
                rest = rest.dropFirst(part.count)
                var size = String(part.utf8.count, radix: 16, uppercase: maybe(.uppercaseHexSize, 10))
                if maybe(.chunkSizeLeadingZeros, 3) { size = "000" + size }
                if maybe(.chunkExtension, 5) { size += pick([";a=b", ";name", ";q=\"quoted\""]) }
                if maybe(.chunkExtensionAfterSpace, 2) { size += " ;x=y" }
                let lineEnd = maybe(.bareLFChunkLine, 1) ? "\n" : "\r\n"
                let dataEnd = maybe(.missingCRLFAfterData, 1) ? "" : "\r\n"
                chunks += size + lineEnd + part + dataEnd
            }
            chunks += "0\r\n"
            if maybe(.trailers, 10) { chunks += "X-Checksum: 1234\r\n" }
            return head + "\r\n" + chunks + "\r\n"
        }
        if content.isEmpty && chance(50) { return "\r\n" }
        var head = "Content-Length: \(content.utf8.count)\r\n"
        if maybe(.repeatedContentLength, 3) { head += "Content-Length: \(content.utf8.count)\r\n" }
        if maybe(.differingContentLengths, 2) { head += "Content-Length: \(content.utf8.count + 1)\r\n" }
        if maybe(.contentLengthList, 2) { head = "Content-Length: \(content.utf8.count), \(content.utf8.count)\r\n" }
        return head + "\r\n" + content
    }
}
