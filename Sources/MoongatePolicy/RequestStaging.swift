import CLuaShims

/// A one-byte buffer for empty strings (their UTF-8 view has no base address).
nonisolated(unsafe) private let emptyCString: UnsafePointer<CChar> = {
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: 1)
    p.pointee = 0
    return UnsafePointer(p)
}()

/// Copies a request into the state's C staging area, which the `req` userdata reads lazily.
/// No Lua value is created here; strings go into a reusable C arena.
enum RequestStaging {
    @inline(__always)
    static func put(_ L: OpaquePointer, _ field: Int32, _ value: String?) {
        guard let value else {
            moon_req_set(L, field, nil, 0)
            return
        }
        withBytes(value) { moon_req_set(L, field, $0, $1) }
    }

    @inline(__always)
    static func withBytes<R>(_ s: String, _ body: (UnsafePointer<CChar>, Int) -> R) -> R {
        if let r = s.utf8.withContiguousStorageIfAvailable({ b in
            b.withMemoryRebound(to: CChar.self) { body($0.baseAddress ?? emptyCString, $0.count) }
        }) {
            return r
        }
        var copy = s
        return copy.withUTF8 { b in b.withMemoryRebound(to: CChar.self) { body($0.baseAddress ?? emptyCString, $0.count) } }
    }

    static func stage(_ request: PolicyRequest, into L: OpaquePointer) {
        moon_req_reset(L)
        put(L, Int32(MOON_F_METHOD), request.method)
        put(L, Int32(MOON_F_SCHEME), request.scheme)
        put(L, Int32(MOON_F_AUTHORITY), request.authority)
        put(L, Int32(MOON_F_HOST), request.host)
        put(L, Int32(MOON_F_PATH), request.path)
        put(L, Int32(MOON_F_QUERY), request.query)
        put(L, Int32(MOON_F_VERSION), request.version)
        put(L, Int32(MOON_F_PROTOCOL), request.protocolName)
        put(L, Int32(MOON_F_UPGRADE), request.upgrade)
        put(L, Int32(MOON_F_TARGET_HOST), request.target?.host)
        put(L, Int32(MOON_F_CLIENT_IP), request.client.ip)
        put(L, Int32(MOON_F_FORM), request.form)
        moon_req_set_ints(
            L, Int32(request.target?.port ?? 0), Int32(request.port ?? 0), Int32(request.client.port),
            request.client.tls ? 1 : 0)
        if let session = request.client.session { stageTLS(session, into: L) }
        for field in request.headers {
            withBytes(field.name) { n, nl in
                withBytes(field.value) { v, vl in moon_req_add_header(L, n, nl, v, vl) }
            }
        }
    }

    /// The client's TLS session, for `req.client.tls`.
    private static func stageTLS(_ session: TLSSessionInfo, into L: OpaquePointer) {
        put(L, Int32(MOON_F_TLS_VERSION), session.version)
        put(L, Int32(MOON_F_TLS_ALPN), session.alpn)
        put(L, Int32(MOON_F_TLS_SNI), session.sni)
        put(L, Int32(MOON_F_TLS_CIPHER), session.cipher)
        guard let certificate = session.clientCertificate else { return }
        put(L, Int32(MOON_F_TLS_SUBJECT), certificate.subject)
        put(L, Int32(MOON_F_TLS_SANS), certificate.sans.joined(separator: "\n"))
        put(L, Int32(MOON_F_TLS_SHA256), certificate.sha256)
    }

    static func stageResponse(status: Int, headers: [HeaderField], into L: OpaquePointer) {
        moon_res_reset(L, Int32(status))
        for field in headers {
            withBytes(field.name) { n, nl in
                withBytes(field.value) { v, vl in moon_res_add_header(L, n, nl, v, vl) }
            }
        }
    }
}
