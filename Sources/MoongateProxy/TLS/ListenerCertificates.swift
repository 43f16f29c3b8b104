import MoongateConfig
import NIOSSL
import Synchronization

/// The live certificates of one TLS listener. Each handshake takes the current
/// ``ServerNameTable``; a reload re-reads every pair and swaps the table, keeping the previous
/// version of any pair whose new files are broken. Connections already open keep the context they
/// shook hands with: a reload never touches them.
public final class ListenerCertificates: Sendable {
    /// The listener's name.
    public let listener: String
    let settings: ListenerTLSConfig
    let alpn: [String]
    private struct State {
        var pairs: [CertificatePair?]
        var table: ServerNameTable
        var problems: [CertificateProblem]
    }
    private let state: Mutex<State>

    /// Loads every pair. A broken pair at start-up is an error: the listener cannot serve it.
    /// - Parameter alpn: the ALPN protocols offered, most preferred first.
    init(listener: String, settings: ListenerTLSConfig, alpn: [String]) throws(CertificateProblem) {
        self.listener = listener
        self.settings = settings
        self.alpn = alpn
        var pairs: [CertificatePair?] = []
        for pair in settings.certificates { pairs.append(try CertificatePair.load(pair, settings: settings, alpn: alpn)) }
        state = Mutex(State(pairs: pairs, table: ServerNameTable(pairs: pairs, defaultIndex: settings.defaultIndex), problems: []))
    }

    /// The context a handshake with this SNI name uses.
    func context(for serverName: String?) -> NIOSSLContext {
        state.withLock { $0.table.context(for: serverName) }
    }

    /// The problems of the last reload (empty when every pair loaded).
    public var problems: [CertificateProblem] { state.withLock { $0.problems } }

    /// The SNI names each loaded pair serves, in the config's order (for the admin endpoint).
    public var servedNames: [[String]] { state.withLock { $0.pairs.map { $0?.serverNames ?? [] } } }

    /// Re-reads every pair off the event loops; a valid new pair serves the next handshake, a broken
    /// one keeps its previous version. - Returns: the problems found (empty: all loaded).
    @discardableResult
    public func reload() -> [CertificateProblem] {
        var fresh: [CertificatePair?] = []
        var problems: [CertificateProblem] = []
        for pair in settings.certificates {
            do {
                fresh.append(try CertificatePair.load(pair, settings: settings, alpn: alpn))
            } catch {
                problems.append(error)
                fresh.append(nil)
            }
        }
        state.withLock { state in
            for index in fresh.indices where fresh[index] == nil { fresh[index] = state.pairs[index] }
            state.pairs = fresh
            state.table = ServerNameTable(pairs: fresh, defaultIndex: settings.defaultIndex)
            state.problems = problems
        }
        return problems
    }
}
