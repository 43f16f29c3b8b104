/// One fuzzer input, read as: a flags byte (each target gives it its own meaning), a byte whose low
/// four bits count the piece lengths that follow (one byte each), then the message. The message is
/// fed to a parser three ways — whole, cut into those pieces (the rest as a last piece), and one
/// byte at a time — and every way must give the same result.
public struct FuzzInput {
    public let flags: UInt8
    public let message: [UInt8]
    private let pieceLengths: [Int]

    /// nil when the input is too short to hold its own header.
    public init?(_ data: UnsafeRawBufferPointer) {
        guard data.count >= 2 else { return nil }
        let count = Int(data[1] & 0x0F)
        guard data.count >= 2 + count else { return nil }
        flags = data[0]
        pieceLengths = (0..<count).map { Int(data[2 + $0]) }
        message = Array(data[(2 + count)...])
    }

    /// The ways of feeding the message.
    public enum Feeding: CaseIterable, CustomStringConvertible {
        case whole, pieces, bytes
        public var description: String {
            switch self {
            case .whole: "whole"
            case .pieces: "in pieces"
            case .bytes: "byte by byte"
            }
        }
    }

    /// The message cut as `feeding` says (an empty piece is an empty read).
    public func reads(_ feeding: Feeding) -> [ArraySlice<UInt8>] {
        switch feeding {
        case .whole:
            return [message[...]]
        case .bytes:
            return message.indices.map { message[$0..<$0 + 1] }
        case .pieces:
            var reads: [ArraySlice<UInt8>] = []
            var offset = 0
            for length in pieceLengths {
                let end = min(offset + length, message.count)
                reads.append(message[offset..<end])
                offset = end
            }
            reads.append(message[offset...])
            return reads
        }
    }
}

/// Stops the run with a report libFuzzer saves as a crash (the input that broke an invariant).
public func invariant(_ condition: Bool, _ message: @autoclosure () -> String, input: FuzzInput) {
    if condition { return }
    let text = String(decoding: input.message.prefix(600), as: UTF8.self).debugDescription
    fatalError("invariant broken: \(message())\n  flags \(input.flags), message \(text)")
}
