/// libFuzzer's entry point for a program with its own `main` (compiler-rt FuzzerDriver.cpp). Only
/// a `-sanitize=fuzzer` link provides it, which is why these targets exist only under MOONGATE_FUZZ=1.
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// Runs libFuzzer with the command line's options over `testOneInput` and returns its exit status.
///
/// The same function is also exported as `LLVMFuzzerTestOneInput`, so the program behaves the same
/// whichever `main` the linker keeps: this one, or the one in libFuzzer's archive.
public func runLibFuzzer(_ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32 {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, testOneInput)
}
