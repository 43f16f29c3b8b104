#if canImport(Glibc)
import Glibc
#endif
import Logging
import MoongateConfig
import ServiceLifecycle
import Synchronization

/// Watches the certificate, key and CA files of every TLS listener and reloads a listener's
/// certificates when one of its files changes (in-place writes, atomic renames, symlink swaps), the
/// way the policy reloader watches scripts. A broken file is logged with its reason and kept for the
/// admin `GET /policy`; the previous pair keeps serving.
public final class CertificateReloader: Service, Sendable {
    private struct Fingerprint: Hashable {
        let inode: UInt64
        let size: Int64
        let modified: Int64
    }

    /// The listeners watched.
    public let listeners: [ListenerCertificates]
    private let logger: Logger
    private let prints = Mutex<[String: Fingerprint?]>([:])

    /// Creates the reloader of `listeners` (the certificates of ``ProxyServer/certificates``).
    public init(listeners: [ListenerCertificates], logger: Logger) {
        self.listeners = listeners
        self.logger = logger
        var initial: [String: Fingerprint?] = [:]
        for listener in listeners {
            for file in listener.settings.files { initial[file] = Self.fingerprint(file) }
        }
        prints.withLock { $0 = initial }
    }

    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            if !listeners.isEmpty { group.addTask { await self.watch() } }
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }

    /// Reloads the listeners whose files changed since the last look; returns how many reloaded.
    @discardableResult
    public func reloadChanged(reason: String = "file change") -> Int {
        var reloaded = 0
        for listener in listeners where changed(listener.settings.files) {
            reloaded += 1
            let problems = listener.reload()
            if problems.isEmpty {
                logger.info("certificates reloaded", metadata: ["listener": "\(listener.listener)", "reason": "\(reason)"])
            }
            for problem in problems {
                logger.error(
                    "certificate rejected; the previous pair keeps serving",
                    metadata: ["listener": "\(listener.listener)", "file": "\(problem.file)", "error": "\(problem.reason)"])
            }
        }
        return reloaded
    }

    private func watch() async {
        let trigger = InotifyTrigger()
        let files = listeners.flatMap(\.settings.files)
        trigger?.watch(files)
        var lastPoll = ContinuousClock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: trigger == nil ? .milliseconds(200) : .milliseconds(20))
            let woken = trigger?.drain() ?? true
            let now = ContinuousClock.now
            guard woken || now - lastPoll >= .seconds(1) else { continue }
            lastPoll = now
            var seen = files.map(Self.fingerprint)
            guard prints.withLock({ prints in zip(files, seen).contains { prints[$0.0] ?? nil != $0.1 } }) else { continue }
            // Debounce: a certificate and its key are often written one after the other; wait
            // until the files have been still for three looks in a row.
            var quiet = 0
            while quiet < 3 && !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(30))
                _ = trigger?.drain()
                let now = files.map(Self.fingerprint)
                quiet = now == seen ? quiet + 1 : 0
                seen = now
            }
            reloadChanged()
            trigger?.watch(files)
        }
    }

    /// True when one of `files` moved since the last look (and records the new fingerprints).
    private func changed(_ files: [String]) -> Bool {
        prints.withLock { prints in
            var moved = false
            for file in files {
                let now = Self.fingerprint(file)
                if now != prints[file] ?? nil {
                    prints[file] = now
                    moved = true
                }
            }
            return moved
        }
    }

    private static func fingerprint(_ path: String) -> Fingerprint? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Fingerprint(
            inode: UInt64(info.st_ino), size: Int64(info.st_size),
            modified: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec))
    }
}
