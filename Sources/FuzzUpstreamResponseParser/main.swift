import ParserFuzzing

#if canImport(Glibc)
import Glibc
#endif

/// libFuzzer's entry point: one input through every invariant of ``UpstreamResponseOracle``.
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    if let input = FuzzInput(UnsafeRawBufferPointer(start: data, count: size)) { UpstreamResponseOracle.check(input) }
    return 0
}

exit(runLibFuzzer(testOneInput))
