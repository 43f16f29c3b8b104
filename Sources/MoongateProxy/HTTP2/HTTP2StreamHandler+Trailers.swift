import MoongatePolicy
import NIOCore
import NIOHPACK
import NIOHTTP2

/// Request trailers (a HEADERS block after the DATA): checked like any header block and carried to
/// an HTTP/1.1 upstream in the last chunk when the request is chunked; with a content-length there
/// is nowhere to put them, and they are dropped (RFC 9110 §6.5.1). A trailer block ends the request.
extension HTTP2StreamHandler {
    func clientTrailers(_ block: HPACKHeaders, context: HTTP2StreamContext) {
        let trailers: [HeaderField]
        do throws(HTTP2RequestValidator.Malformed) {
            trailers = try HTTP2RequestValidator.validateTrailers(block)
        } catch {
            malformed(error.reason, context: context)
            return
        }
        if let declaredLength, receivedLength != declaredLength {
            malformed("DATA does not match content-length", context: context)
            return
        }
        releaseRequestTail(context: context)
        if case .forwardingH2(let forward) = state, !trailers.isEmpty {
            forwardTrailers(trailers, forward)
            return
        }
        guard case .exchanging(let exchange, _) = state, !exchange.requestComplete, exchange.requestFraming == .chunked,
            !trailers.isEmpty
        else {
            clientEnded(context: context)
            return
        }
        let last = HTTP1Wire.lastChunk(trailers: trailers, allocator: context.allocator)
        exchange.requestComplete = true
        if let upstream = exchange.upstream {
            exchange.flushUpstream()
            upstream.write(last)
            upstream.flush()
        } else {
            exchange.pending.append(last)
        }
        finishIfComplete(exchange)
    }
}
