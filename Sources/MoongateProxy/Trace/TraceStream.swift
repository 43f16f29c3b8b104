import MoongatePolicy
import NIOCore
import NIOHTTP1

/// `GET /trace?…` on the admin listener: a chunked response of JSON lines, one per traced request
/// that matches the query's filter (``TraceFilter``), for `seconds`, at most `rate` a second.
///
/// The first line says what is being traced (`{"tracing":{…}}`), the last how many lines were sent
/// and dropped (`{"end":…}`); the connection closes after it. Closing the connection earlier ends
/// the trace at once.
enum TraceStream {
    static func start(uri: String, hub: TraceHub?, context: ChannelHandlerContext) {
        let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
        guard let hub else {
            refuse(.notFound, "tracing is not available here\n", context: context)
            return
        }
        let filter: TraceFilter
        do {
            filter = try TraceFilter.parse(query: query)
        } catch {
            refuse(.badRequest, error.message + "\n", context: context)
            return
        }
        let channel = context.channel
        let headers = HTTPHeaders([
            ("content-type", "application/x-ndjson"), ("transfer-encoding", "chunked"), ("cache-control", "no-store"),
            ("connection", "close"),
        ])
        context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        let opening = "{\"tracing\":{\"filter\":\(filter),\"rate\":\(filter.rate),\"seconds\":\(filter.seconds)}}\n"
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(channel.allocator.buffer(string: opening)))), promise: nil)
        let id = hub.subscribe(filter) { line in
            guard channel.isActive, channel.isWritable else { return false }
            var buffer = channel.allocator.buffer(capacity: line.utf8.count + 1)
            buffer.writeString(line)
            buffer.writeStaticString("\n")
            channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: nil)
            return true
        }
        let end = context.eventLoop.scheduleTask(in: .seconds(Int64(filter.seconds))) {
            guard let totals = hub.unsubscribe(id) else { return }
            let closing = "{\"end\":{\"sent\":\(totals.sent),\"dropped\":\(totals.dropped)}}\n"
            channel.write(HTTPServerResponsePart.body(.byteBuffer(channel.allocator.buffer(string: closing))), promise: nil)
            channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in channel.close(promise: nil) }
        }
        channel.closeFuture.whenComplete { _ in
            end.cancel()
            hub.unsubscribe(id)
        }
    }

    private static func refuse(_ status: HTTPResponseStatus, _ body: String, context: ChannelHandlerContext) {
        let headers = HTTPHeaders([("content-type", "text/plain"), ("content-length", String(body.utf8.count)), ("connection", "close")])
        context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
