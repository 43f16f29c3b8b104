import MoongatePolicy
import NIOCore
import NIOHPACK
import NIOHTTP1

/// A parsed upstream response head: the raw bytes as received and where each field sits in them.
///
/// Nothing is decoded into strings on the forwarding path: the client's head is written by copying
/// the field lines that pass the sanitization floor (``writeFields(into:dropContentLength:)``).
/// Strings are made only when a script reads the response (``fields``).
struct UpstreamResponseHead {
    /// Offsets of one field line inside ``raw``.
    typealias FieldRange = HTTP1Syntax.FieldRange

    /// The status code (100…599).
    let code: Int
    /// The head as received, from the status line through the blank line.
    let raw: ByteBuffer
    /// The fields, in order.
    let ranges: [FieldRange]
    /// The reason phrase's offsets in ``raw``.
    let reasonStart: Int32
    let reasonEnd: Int32
    /// The connection may carry another request after this response.
    let isKeepAlive: Bool
    /// A `Connection` header names fields other than `keep-alive` and `close`.
    let connectionNamesFields: Bool
    /// How the upstream delimits the body (as the head says; the parser settles 1xx/204/304/HEAD).
    let framing: UpstreamResponseParser.Framing

    /// The status, with the standard reason phrase for known codes and the upstream's otherwise.
    var status: HTTPResponseStatus { HTTPResponseStatus(statusCode: code, reasonPhrase: reason) }

    /// The reason phrase as received.
    var reason: String { string(reasonStart, reasonEnd) }

    /// The fields as strings (for scripts and upgrades; not on the forwarding path).
    var fields: [HeaderField] {
        ranges.map { HeaderField(string($0.nameStart, $0.nameEnd), string($0.valueStart, $0.valueEnd)) }
    }

    private func string(_ start: Int32, _ end: Int32) -> String {
        raw.getString(at: raw.readerIndex + Int(start), length: Int(end - start)) ?? ""
    }

    /// Copies every field line the sanitization floor lets through (no hop-by-hop field, nothing a
    /// `Connection` header names), and no Content-Length when the client's framing is chunked.
    func writeFields(into out: inout ByteBuffer, dropContentLength: Bool) {
        forEachForwardedField(dropContentLength: dropContentLength) { name, value in
            out.writeBytes(name)
            out.writeStaticString(": ")
            out.writeBytes(value)
            out.writeStaticString("\r\n")
        }
    }

    /// The same fields as an HTTP/2 header block carries them: names lower-cased, made straight from
    /// the received bytes (the HTTP/2 forwarding path when no script reads the response). The caller
    /// makes the block with room for them (``HPACKHeaders/response(status:room:)``).
    func addFields(to headers: inout HPACKHeaders) {
        forEachForwardedField(dropContentLength: false) { name, value in
            let lowered = String(unsafeUninitializedCapacity: name.count) { out in
                for (index, byte) in name.enumerated() { out[index] = byte >= 65 && byte <= 90 ? byte | 0x20 : byte }
                return name.count
            }
            headers.add(name: lowered, value: String(decoding: value, as: UTF8.self))
        }
    }

    /// Calls `body` with the name and value bytes of each field the sanitization floor lets through.
    private func forEachForwardedField(
        dropContentLength: Bool, _ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Void
    ) {
        raw.withUnsafeReadableBytes { bytes in
            var named: [FieldRange] = []
            if connectionNamesFields {
                for field in ranges where HTTP1Syntax.equalsFolded(bytes, field.nameStart, field.nameEnd, "connection") {
                    HTTP1Syntax.forEachToken(bytes, field.valueStart, field.valueEnd) { start, end in
                        named.append(FieldRange(nameStart: start, nameEnd: end, valueStart: 0, valueEnd: 0))
                    }
                }
            }
            for field in ranges {
                let name = UnsafeRawBufferPointer(rebasing: bytes[Int(field.nameStart)..<Int(field.nameEnd)])
                if SanitizationFloor.isHopByHop(bytes: name) { continue }
                if dropContentLength && HTTP1Syntax.equalsFolded(bytes, field.nameStart, field.nameEnd, "content-length") { continue }
                if !named.isEmpty && named.contains(where: { Self.sameFolded(bytes, $0, field) }) { continue }
                body(name, UnsafeRawBufferPointer(rebasing: bytes[Int(field.valueStart)..<Int(field.valueEnd)]))
            }
        }
    }

    // MARK: - Byte helpers

    /// Whether a token range (name fields of `token`) names the field `field`.
    private static func sameFolded(_ bytes: UnsafeRawBufferPointer, _ token: FieldRange, _ field: FieldRange) -> Bool {
        let count = Int(token.nameEnd - token.nameStart)
        guard count == Int(field.nameEnd - field.nameStart) else { return false }
        for i in 0..<count {
            var a = bytes[Int(token.nameStart) + i]
            var b = bytes[Int(field.nameStart) + i]
            if a >= 65 && a <= 90 { a |= 0x20 }
            if b >= 65 && b <= 90 { b |= 0x20 }
            if a != b { return false }
        }
        return true
    }
}
