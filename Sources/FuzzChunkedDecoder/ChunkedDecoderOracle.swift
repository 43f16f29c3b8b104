import NIOCore
import ParserFuzzing

@testable import MoongateProxy

/// The invariants `ChunkedDecoder` must keep on any input, strict (requests) or not (responses),
/// with trailer budgets from none to 1 KiB: the same data, end and refusal whole, in pieces and
/// byte by byte; exactly the bytes of the body taken (what follows the last chunk's trailers stays
/// in the buffer); and the same answer as ``ReferenceChunked``, written apart from it.
enum ChunkedDecoderOracle {
    static let trailerBudgets = [0, 16, 1024, 60 * 1024]

    static func check(_ input: FuzzInput) {
        let strict = input.flags & 1 == 1
        let budget = trailerBudgets[Int(input.flags >> 1) & 3]
        let whole = run(input, .whole, strict: strict, budget: budget)
        for feeding in [FuzzInput.Feeding.pieces, .bytes] {
            let other = run(input, feeding, strict: strict, budget: budget)
            invariant(other == whole, "fed \(feeding): \(other), whole: \(whole)", input: input)
        }
        let reference = ReferenceChunked(strict: strict, maxTrailerBytes: budget).decode(input.message[...])
        invariant(reference == whole, "decoded \(whole), the reference says \(reference)", input: input)
    }

    static func run(_ input: FuzzInput, _ feeding: FuzzInput.Feeding, strict: Bool, budget: Int) -> ReferenceChunked.Outcome {
        var decoder = ChunkedDecoder(strictSizes: strict, maxTrailerBytes: budget)
        var data: [UInt8] = []
        var consumed = 0
        for read in input.reads(feeding) {
            var buffer = ByteBuffer(bytes: read)
            do {
                while let event = try decoder.next(&buffer) {
                    switch event {
                    case .data(let bytes): data += bytes.readableBytesView
                    case .end: return .complete(data: data, consumed: consumed + buffer.readerIndex)
                    }
                }
            } catch {
                return .refused(data: data)
            }
            invariant(buffer.readableBytes == 0, "bytes left unread before the end", input: input)
            consumed += read.count
        }
        return .incomplete(data: data)
    }
}
