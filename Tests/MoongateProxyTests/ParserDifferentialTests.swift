import MoongatePolicy
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import MoongateProxy

/// Moongate's parsers against SwiftNIO's own HTTP/1 decoders (llhttp behind `ByteToMessageHandler`,
/// driven through an `EmbeddedChannel`) over seeded generated messages, each fed to both in the same
/// random pieces. Where both accept, they must agree on the start line, the fields in order and the
/// body bytes; where they disagree, the message must carry a variant listed in
/// ``knownDifferences`` with the same kind of disagreement (our choice and its reason are written
/// there, and in README "Parser differences from NIO's decoder"); anything else fails, naming the case.
@Suite("Parsers against NIO's HTTP/1 decoder")
struct ParserDifferentialTests {
    /// What a parser made of one message.
    enum Outcome: Equatable, CustomStringConvertible {
        case accepted(heads: [String], body: [UInt8])
        /// Valid so far, waiting for more bytes.
        case incomplete
        case refused(String)

        var description: String {
            switch self {
            case .accepted(let heads, let body): "accepted \(heads) body \(body.count) bytes"
            case .incomplete: "incomplete"
            case .refused(let reason): "refused (\(reason))"
            }
        }
    }

    /// How the two parsers disagreed.
    enum Disagreement: String, Sendable {
        case moongateRefuses = "Moongate refuses, NIO accepts"
        case nioRefuses = "NIO refuses, Moongate accepts"
        case bothAcceptDifferently = "both accept, with different results"
        case moongateWaits = "Moongate waits for more, NIO accepts"
        case nioWaits = "NIO waits for more, Moongate refuses"
    }

    /// Every disagreement seen, the variant it comes from, and why Moongate's behaviour is the one we want.
    static let knownDifferences: [MessageVariant: (Disagreement, String)] = [
        .whitespaceAroundValue: (
            .bothAcceptDifferently,
            "NIO keeps trailing spaces and tabs in a field value; the value excludes the whitespace around it (RFC 9112 §5.1), so we trim it"
        ),
        .repeatedContentLength: (
            .nioRefuses,
            "identical repeated Content-Length fields give one length (RFC 9110 §8.6 lets a recipient accept them; hardening.md §A.5 says reject or merge); differing ones are refused by both"
        ),
        .customMethod: (
            .nioRefuses,
            "llhttp knows a fixed list of methods; a method is any token (RFC 9110 §9.1, case-sensitive, so `get` is not GET), and policy decides which ones it serves"
        ),
        .chunkExtensionAfterSpace: (
            .nioRefuses,
            "RFC 9112 §7.1.1 allows whitespace (BWS) before a chunk extension's `;`; the line still ends at its CRLF, so nothing is ambiguous (a size followed by whitespace and nothing else is still refused in requests, hardening.md §A.13)"
        ),
        .codingListWithChunked: (
            .moongateRefuses,
            "bodies are relayed without decoding; a transfer coding other than one `chunked` is refused (hardening.md §0.2, §A.3) rather than passed to a next hop that may read it differently"
        ),
    ]

    static let messages = 2000

    @Test("Requests: both decoders agree, or the difference is a documented one")
    func requests() throws {
        var generator = HTTPMessageGenerator(seed: 0x5EED_0001)
        var rng = SplitMix64(seed: 0x5EED_0002)
        var seen: [String: Int] = [:]
        for index in 0..<Self.messages {
            let message = generator.request()
            let reads = Self.split(message.bytes, &rng)
            let ours = Self.moongateRequest(reads)
            let nio = Self.nioRequest(reads)
            Self.judge(index, message, ours, nio, &seen)
        }
        // The table stays honest: every difference it lists still happens.
        for (variant, (kind, _)) in Self.knownDifferences {
            #expect(seen.keys.contains { $0.hasPrefix(kind.rawValue) && $0.contains(variant.rawValue) }, "\(variant) no longer differs")
        }
    }

    @Test("Responses: both decoders agree, or the difference is a documented one")
    func responses() throws {
        var generator = HTTPMessageGenerator(seed: 0x5EED_0003)
        var rng = SplitMix64(seed: 0x5EED_0004)
        var seen: [String: Int] = [:]
        for index in 0..<Self.messages {
            let message = generator.response()
            let reads = Self.split(message.bytes, &rng)
            let ours = Self.moongateResponse(reads)
            let nio = Self.nioResponse(reads)
            Self.judge(index, message, ours, nio, &seen)
        }
    }

    /// Fails unless the two agree or a variant of the message explains the disagreement.
    static func judge(_ index: Int, _ message: HTTPMessageGenerator.Message, _ ours: Outcome, _ nio: Outcome, _ seen: inout [String: Int]) {
        let kind: Disagreement
        switch (ours, nio) {
        case (.accepted, .accepted) where ours == nio, (.refused, .refused), (.incomplete, .incomplete): return
        case (.accepted, .accepted): kind = .bothAcceptDifferently
        case (.refused, _): kind = nio == .incomplete ? .nioWaits : .moongateRefuses
        case (_, .refused): kind = .nioRefuses
        case (.incomplete, _): kind = .moongateWaits
        case (_, .incomplete): kind = .nioRefuses
        }
        let explained = message.variants.filter { knownDifferences[$0]?.0 == kind }
        let key = "\(kind.rawValue): \(message.variants.map(\.rawValue).sorted().joined(separator: "+"))"
        seen[key, default: 0] += 1
        #expect(!explained.isEmpty, "case \(index) \(key)\n  \(message.text)\n  Moongate: \(ours)\n  NIO: \(nio)")
    }

    /// The message cut into one to four reads at random points.
    static func split(_ bytes: [UInt8], _ rng: inout SplitMix64) -> [ArraySlice<UInt8>] {
        var cuts = (0..<Int(rng.next() % 4)).map { _ in Int(rng.next() % UInt64(bytes.count + 1)) }
        cuts = ([0] + cuts.sorted() + [bytes.count])
        return zip(cuts, cuts.dropFirst()).map { bytes[$0..<$1] }
    }

    // MARK: - Requests

    static func moongateRequest(_ reads: [ArraySlice<UInt8>]) -> Outcome {
        let parser = ClientRequestParser(maxHeadBytes: 60 * 1024, maxFields: 100)
        var heads: [String] = []
        var body: [UInt8] = []
        var ended = false
        do {
            for read in reads {
                var buffer = ByteBuffer(bytes: read)
                _ = try parser.feed(&buffer) { part in
                    switch part {
                    case .head(let head): heads.append(describe(head.method, head.uri, head.version, head.fields))
                    case .body(let bytes): body += bytes.readableBytesView
                    case .end: ended = true
                    }
                }
            }
        } catch {
            return .refused("\(error.status) \(error.reason)")
        }
        return ended ? .accepted(heads: heads, body: body) : .incomplete
    }

    static func nioRequest(_ reads: [ArraySlice<UInt8>]) -> Outcome {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        defer { _ = try? channel.finish() }
        var heads: [String] = []
        var body: [UInt8] = []
        var ended = false
        do {
            for read in reads {
                try channel.writeInbound(ByteBuffer(bytes: read))
                while let part = try channel.readInbound(as: HTTPServerRequestPart.self) {
                    switch part {
                    case .head(let head):
                        heads.append(describe(head.method.rawValue, head.uri, "\(head.version)", head.headers.map { HeaderField($0.name, $0.value) }))
                    case .body(let bytes): body += bytes.readableBytesView
                    case .end: ended = true
                    }
                }
            }
        } catch {
            return .refused("\(error)")
        }
        return ended ? .accepted(heads: heads, body: body) : .incomplete
    }

    // MARK: - Responses (to a GET)

    static func moongateResponse(_ reads: [ArraySlice<UInt8>]) -> Outcome {
        let parser = UpstreamResponseParser(maxHeadBytes: 60 * 1024, maxFields: 100)
        parser.expect(.response(head: false))
        var heads: [String] = []
        var body: [UInt8] = []
        var ended = false
        let emit = { (part: UpstreamPart) in
            switch part {
            case .head(let head):
                let minor = head.raw.getInteger(at: head.raw.readerIndex + 7, as: UInt8.self).map { $0 - 48 } ?? 9
                heads.append(describe("\(head.code)", "", "HTTP/1.\(minor)", head.fields))
            case .body(let bytes): body += bytes.readableBytesView
            case .trailers: break  // NIO's parser drops them too
            case .end: ended = true
            }
        }
        do {
            for read in reads {
                var buffer = ByteBuffer(bytes: read)
                _ = try parser.feed(&buffer, emit: emit)
            }
            try parser.inputEnded(emit: emit)
        } catch {
            return .refused(error.reason)
        }
        return ended ? .accepted(heads: heads, body: body) : .incomplete
    }

    static func nioResponse(_ reads: [ArraySlice<UInt8>]) -> Outcome {
        let decoder = HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes, informationalResponseStrategy: .forward)
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(decoder))
        defer { _ = try? channel.finish() }
        var heads: [String] = []
        var body: [UInt8] = []
        var ended = false
        func drain() throws {
            while let part = try channel.readInbound(as: HTTPClientResponsePart.self) {
                switch part {
                case .head(let head):
                    heads.append(describe("\(head.status.code)", "", "\(head.version)", head.headers.map { HeaderField($0.name, $0.value) }))
                case .body(let bytes): body += bytes.readableBytesView
                case .end: ended = true
                }
            }
        }
        do {
            try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
            for read in reads {
                try channel.writeInbound(ByteBuffer(bytes: read))
                try drain()
            }
            channel.pipeline.fireChannelInactive()
            try channel.throwIfErrorCaught()
            try drain()
        } catch {
            return .refused("\(error)")
        }
        return ended ? .accepted(heads: heads, body: body) : .incomplete
    }

    static func describe(_ method: String, _ target: String, _ version: String, _ fields: [HeaderField]) -> String {
        "\(method) \(target) \(version) " + fields.map { "\($0.name)=\($0.value.debugDescription)" }.joined(separator: " ")
    }
}
