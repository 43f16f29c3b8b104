import MoongateConfig
import MoongatePolicy

#if canImport(Glibc)
import Glibc
#endif

/// Password hashes made at test time: through the C library's crypt(3) itself (dlopen'd libcrypt,
/// with its own buffers, so parallel tests do not share crypt's static one), and through
/// `openssl passwd` as an independent implementation of SHA-crypt.
enum TestHashes {
    private typealias Gensalt = @convention(c) (
        UnsafePointer<CChar>?, UInt, UnsafePointer<CChar>?, Int32, UnsafeMutablePointer<CChar>?, Int32
    ) -> UnsafeMutablePointer<CChar>?
    private typealias CryptRN = @convention(c) (
        UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafeMutableRawPointer?, Int32
    ) -> UnsafeMutablePointer<CChar>?

    /// A hash of `password` with `prefix` (`$2y$`, `$2b$`, `$5$`, `$6$`) and `count` (bcrypt cost,
    /// SHA-crypt rounds; 0 for the default).
    static func crypt(_ password: String, prefix: String, count: UInt = 0) -> String {
        guard let library = dlopen("libcrypt.so.1", RTLD_NOW), let gensalt = dlsym(library, "crypt_gensalt_rn"), let cryptRN = dlsym(library, "crypt_rn") else {
            fatalError("libcrypt.so.1 is missing")
        }
        let makeSetting = unsafeBitCast(gensalt, to: Gensalt.self)
        let hash = unsafeBitCast(cryptRN, to: CryptRN.self)
        var setting = [CChar](repeating: 0, count: 256)
        guard makeSetting(prefix, count, nil, 0, &setting, Int32(setting.count)) != nil else {
            fatalError("crypt_gensalt_rn refused \(prefix)")
        }
        let data = UnsafeMutableRawPointer.allocate(byteCount: 65536, alignment: 16)
        defer { data.deallocate() }
        memset(data, 0, 65536)
        guard let out = hash(password, setting, data, 65536) else { fatalError("crypt_rn failed") }
        return String(cString: out)
    }

    /// `openssl passwd -5` or `-6` (a SHA-crypt made by OpenSSL, not by libcrypt).
    static func openssl(_ password: String, method: String) -> String {
        guard let pipe = popen("openssl passwd -\(method) '\(password)'", "r") else { fatalError("popen failed") }
        defer { pclose(pipe) }
        var buffer = [CChar](repeating: 0, count: 512)
        guard fgets(&buffer, Int32(buffer.count), pipe) != nil else { fatalError("openssl passwd gave nothing") }
        return text(of: buffer).trimmingSuffixNewline()
    }
}

/// The text of a NUL-ended C character array.
func text(of chars: [CChar]) -> String {
    String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

extension String {
    func trimmingSuffixNewline() -> String {
        var text = self
        while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
        return text
    }
}

/// A fresh folder under /tmp, removed by `remove()`.
struct TemporaryFolder {
    let path: String

    init() {
        var template = Array("/tmp/moongate-htpasswd-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { fatalError("mkdtemp failed") }
        path = text(of: template)
    }

    /// Writes `text` to `name` in the folder and returns its path.
    @discardableResult
    func write(_ name: String, _ text: String) -> String {
        let file = "\(path)/\(name)"
        guard let handle = fopen(file, "wb") else { fatalError("cannot write \(file)") }
        _ = text.withCString { fputs($0, handle) }
        fclose(handle)
        return file
    }

    func remove() {
        if let dir = opendir(path) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { unlink("\(path)/\(name)") }
            }
            closedir(dir)
        }
        rmdir(path)
    }
}

/// `Proxy-Authorization: Basic base64(user:password)`.
func basicCredentials(_ user: String, _ password: String) -> HeaderField {
    let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    let bytes = Array("\(user):\(password)".utf8)
    var out: [UInt8] = []
    var i = 0
    while i < bytes.count {
        let n = min(3, bytes.count - i)
        let chunk = (UInt32(bytes[i]) << 16) | (n > 1 ? UInt32(bytes[i + 1]) << 8 : 0) | (n > 2 ? UInt32(bytes[i + 2]) : 0)
        for j in 0..<4 {
            out.append(j <= n ? table[Int((chunk >> (18 - 6 * UInt32(j))) & 63)] : UInt8(ascii: "="))
        }
        i += 3
    }
    return HeaderField("proxy-authorization", "Basic " + String(decoding: out, as: UTF8.self))
}
