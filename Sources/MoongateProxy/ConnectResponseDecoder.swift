import MoongatePolicy
import NIOCore
import NIOHTTP1

/// Reads a parent proxy's answer to a forwarded CONNECT. NIO's response decoder would go on
/// parsing the bytes after a 2xx head as another response; here the head is parsed alone
/// (16 KiB at most), a 2xx ends the HTTP message at its blank line — whatever Content-Length or
/// Transfer-Encoding it carries — and every later byte is passed on raw as tunnel data. A non-2xx
/// is passed on as an ordinary response: its body is what follows, up to its Content-Length or
/// the connection's end.
final class ConnectResponseDecoder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPClientResponsePart

    private enum State {
        case head(ByteBuffer)
        case body(remaining: Int?)
        case raw
    }

    private var state: State = .head(ByteBuffer())
    /// Bytes after a 2xx head, handed on when this handler leaves the pipeline (the tunnel is set
    /// up from the `.end` it fires, so they must follow it, not precede it).
    private var leftover: ByteBuffer?
    private static let limit = 16 * 1024

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        switch state {
        case .raw:
            context.fireChannelRead(data)
        case .body(let remaining):
            forwardBody(&buffer, remaining: remaining, context: context)
        case .head(var pending):
            pending.writeBuffer(&buffer)
            guard let end = pending.readableBytesView.firstRange(of: [13, 10, 13, 10]) else {
                if pending.readableBytes > Self.limit {
                    context.fireErrorCaught(HTTPParserError.headerOverflow)
                    context.close(promise: nil)
                } else {
                    state = .head(pending)
                }
                return
            }
            let headLength = end.upperBound - pending.readableBytesView.startIndex
            let text = pending.readString(length: headLength) ?? ""
            guard let head = Self.parse(text) else {
                context.fireErrorCaught(HTTPParserError.invalidStatus)
                context.close(promise: nil)
                return
            }
            if head.status.code / 100 == 2 {
                state = .raw
                if pending.readableBytes > 0 { leftover = pending }
                context.fireChannelRead(wrapInboundOut(.head(head)))
                context.fireChannelRead(wrapInboundOut(.end(nil)))
            } else {
                let length = head.headers.first(name: "content-length").flatMap { Int($0) }
                context.fireChannelRead(wrapInboundOut(.head(head)))
                forwardBody(&pending, remaining: length, context: context)
            }
        }
    }

    private func forwardBody(_ buffer: inout ByteBuffer, remaining: Int?, context: ChannelHandlerContext) {
        guard var left = remaining else {
            state = .body(remaining: nil)
            if buffer.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(.body(buffer))) }
            return
        }
        let take = min(left, buffer.readableBytes)
        if take > 0, let slice = buffer.readSlice(length: take) {
            context.fireChannelRead(wrapInboundOut(.body(slice)))
        }
        left -= take
        if left == 0 {
            state = .raw
            context.fireChannelRead(wrapInboundOut(.end(nil)))
        } else {
            state = .body(remaining: left)
        }
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        if let leftover {
            self.leftover = nil
            context.fireChannelRead(NIOAny(leftover))
            context.fireChannelReadComplete()
        }
        context.leavePipeline(removalToken: removalToken)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event, case .body(remaining: nil) = state {
            state = .raw
            context.fireChannelRead(wrapInboundOut(.end(nil)))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .body(remaining: nil) = state {
            state = .raw
            context.fireChannelRead(wrapInboundOut(.end(nil)))
        }
        context.fireChannelInactive()
    }

    /// Parses `HTTP/1.x NNN reason` and header lines.
    static func parse(_ text: String) -> HTTPResponseHead? {
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: true).makeIterator()
        guard let statusLine = lines.next(), statusLine.hasPrefix("HTTP/1.") else { return nil }
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, let code = Int(parts[1]), (100...599).contains(code) else { return nil }
        var headers = HTTPHeaders()
        while let line = lines.next() {
            guard let colon = line.firstIndex(of: ":") else { return nil }
            let name = line[..<colon]
            guard !name.isEmpty, !name.contains(" ") else { return nil }
            headers.add(name: String(name), value: String(line[line.index(after: colon)...]).trimmingSpaces)
        }
        let reason = parts.count > 2 ? String(parts[2]) : ""
        return HTTPResponseHead(version: .http1_1, status: .custom(code: UInt(code), reasonPhrase: reason), headers: headers)
    }
}
