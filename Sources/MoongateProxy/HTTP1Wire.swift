import MoongatePolicy
import NIOCore
import NIOHTTP1

/// How a response body is delimited on the way to the client.
enum BodyFraming {
    /// Nothing follows the head (a response to HEAD, 1xx, 204, 304).
    case none
    /// The upstream's Content-Length stands: body bytes pass through as they are.
    case length
    /// Chunked: every body part is framed, and the end writes the last chunk.
    case chunked
    /// The body runs until the connection closes: the client speaks HTTP/1.0, which has no chunked
    /// coding, and the length is not known.
    case untilClose

    /// A Content-Length the upstream sent cannot describe this framing.
    var dropsContentLength: Bool { self == .chunked || self == .untilClose }
}

/// HTTP/1.1 response heads and body framing, written straight into byte buffers.
///
/// The client side writes bytes itself rather than through NIO's response encoder: one buffer per
/// head, no header copies, no head struct boxed per write. Nothing here validates text: every value
/// written was checked where it came from (parsed fields by the strict decoder, script edits by the
/// edit object — tokens for names, no control characters in values — and locally made values are
/// constants or numbers).
enum HTTP1Wire {
    /// The framing of a forwarded response: no body for HEAD, 1xx, 204 and 304; the upstream's
    /// Content-Length when it sent one; chunked otherwise, so a chunked or close-delimited upstream
    /// body still leaves the client connection reusable — except for an HTTP/1.0 client, which
    /// reads such a body until the connection closes.
    static func framing(
        status: Int, request: PolicyRequest, upstream: UpstreamResponseParser.Framing
    ) -> BodyFraming {
        if request.method == "HEAD" || status < 200 || status == 204 || status == 304 { return .none }
        if case .length = upstream { return .length }
        return request.version == "HTTP/1.0" ? .untilClose : .chunked
    }

    /// `HTTP/1.1 <code> <reason>` and its line end.
    static func writeStatusLine(_ status: HTTPResponseStatus, into buffer: inout ByteBuffer) {
        let code = Int(status.code)
        buffer.writeStaticString("HTTP/1.1 ")
        buffer.writeInteger(UInt8(48 + code / 100 % 10))
        buffer.writeInteger(UInt8(48 + code / 10 % 10))
        buffer.writeInteger(UInt8(48 + code % 10))
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeString(status.reasonPhrase)
        buffer.writeStaticString("\r\n")
    }

    /// One `name: value` line.
    @inline(__always)
    static func writeField(_ name: String, _ value: String, into buffer: inout ByteBuffer) {
        buffer.writeString(name)
        buffer.writeStaticString(": ")
        buffer.writeString(value)
        buffer.writeStaticString("\r\n")
    }

    /// The fields framing and connection management add, then the blank line that ends a head.
    /// A chunked body drops any Content-Length the fields carried (the caller skips it).
    static func finishHead(framing: BodyFraming, close: Bool, into buffer: inout ByteBuffer) {
        if framing == .chunked { buffer.writeStaticString("transfer-encoding: chunked\r\n") }
        if close { buffer.writeStaticString("connection: close\r\n") }
        buffer.writeStaticString("\r\n")
    }

    /// True for a field that framing owns and a chunked head must not repeat.
    static func isContentLength(_ name: String) -> Bool {
        name.utf8.count == 14 && name.asciiCaseInsensitiveEquals("content-length")
    }

    /// The size line that goes before one chunk.
    static func chunkPrefix(_ length: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 18)
        writeChunkSize(length, into: &buffer)
        return buffer
    }

    /// A whole chunk (size line, data, CRLF) appended to `out`; `data` is consumed.
    static func writeChunk(_ data: inout ByteBuffer, into out: inout ByteBuffer) {
        writeChunkSize(data.readableBytes, into: &out)
        out.writeBuffer(&data)
        out.writeStaticString("\r\n")
    }

    private static func writeChunkSize(_ length: Int, into out: inout ByteBuffer) {
        out.writeString(String(length, radix: 16))
        out.writeStaticString("\r\n")
    }

    /// The CRLF after each chunk's data.
    static let chunkEnd = ByteBuffer(staticString: "\r\n")

    /// The last chunk and the blank line that ends the message.
    static let lastChunk = ByteBuffer(staticString: "0\r\n\r\n")

    /// The last chunk with trailer fields (those ``TrailerFields/isCarried(_:)`` lets through).
    static func lastChunk(trailers: [HeaderField], allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: 64)
        out.writeStaticString("0\r\n")
        for field in trailers where TrailerFields.isCarried(field.name) { writeField(field.name, field.value, into: &out) }
        out.writeStaticString("\r\n")
        return out
    }

    /// A buffer for a request head sent upstream: sized for its request line, Host and `fields`
    /// (with room for the framing and upgrade lines), so it is written without growing.
    static func requestHeadBuffer(request: PolicyRequest, fields: [HeaderField], allocator: ByteBufferAllocator) -> ByteBuffer {
        var size = 96 + request.method.utf8.count + (request.path?.utf8.count ?? 1) + (request.query?.utf8.count ?? 0)
            + (request.authority?.utf8.count ?? 0)
        for field in fields { size += field.name.utf8.count + field.value.utf8.count + 4 }
        return allocator.buffer(capacity: size)
    }

    /// An origin-form request line and its Host field (`method path?query HTTP/1.1`, `host:`), as
    /// every request Moongate sends upstream starts, whatever the client's protocol.
    static func writeRequestStart(method: String, request: PolicyRequest, into out: inout ByteBuffer) {
        out.writeString(method)
        out.writeInteger(UInt8(ascii: " "))
        out.writeString(request.path ?? "/")
        if let query = request.query {
            out.writeInteger(UInt8(ascii: "?"))
            out.writeString(query)
        }
        out.writeStaticString(" HTTP/1.1\r\n")
        writeField("host", request.authority ?? "", into: &out)
    }
}
