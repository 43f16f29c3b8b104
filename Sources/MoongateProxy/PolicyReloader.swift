#if canImport(Glibc)
import Glibc
#endif
import Logging
import MoongateConfig
import MoongatePolicy
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The outcome of one reload attempt, as the admin endpoint and the log show it.
public struct ReloadAttempt: Sendable {
    /// `loaded`, `rejected` or `unchanged`.
    public let result: String
    /// What asked for it: `file change`, `SIGHUP`, `admin`.
    public let reason: String
    /// Seconds since the Unix epoch.
    public let at: Double
    /// The generation that loaded (for `loaded`).
    public let generation: Int?
    /// Why it was rejected (step, plugin, file, line, message, test).
    public let error: PolicyLoadError?
    /// A configuration error (the file did not parse).
    public let configError: String?
    /// Milliseconds the load took.
    public let milliseconds: Double
}

/// Reloads policy without a restart: watches every script, fixture and the config file (in-place
/// writes, atomic renames, delete-and-recreate, symlink swaps such as a Kubernetes ConfigMap's
/// `..data` flip), and also reloads on SIGHUP and on ``reload(reason:)`` (the admin `POST /reload`).
///
/// A new generation is built off the event loops: files read, compiled, `init` run, every plugin's
/// tests and fixtures run. Only if all pass is it published (an atomic swap; each loop switches at
/// its next request, and in-flight requests and tunnels keep the generation that admitted them).
/// Otherwise the running generation stays, and the failure is logged, counted and kept for
/// `GET /policy`.
///
/// Change detection: Linux inotify on the files' folders wakes the watcher, which compares `stat`
/// fingerprints (`stat` follows symlinks, so a swapped link shows as a new inode); where inotify
/// is unavailable, `stat` is polled every `interval`. A burst of changes is debounced into one reload.
public final class PolicyReloader: Service, Sendable {
    private struct Fingerprint: Hashable {
        let device: UInt64
        let inode: UInt64
        let size: Int64
        let modified: Int64
    }

    private struct State {
        var nextID = 2
        var fingerprints: [String: Fingerprint?] = [:]
        var last: ReloadAttempt?
        var digests: [String: String] = [:]
        var lastLoadedReason: String?
    }

    private let configPath: String
    /// The configuration the process started with: listeners, admin and threads stay as it says.
    private let running: MoongateConfiguration?
    private let policy: PolicyHost
    private let metrics: ProxyMetrics
    private let logger: Logger
    private let interval: Duration
    private let watch: Bool
    private let state = Mutex(State())
    private let reloading = Mutex(false)
    private let onLoaded: (@Sendable (MoongateConfiguration) -> Void)?

    /// Creates the reloader for the policy of `configPath` (the generation already published is 1).
    /// With `running`, a reload that changes what only a restart applies (listeners, admin,
    /// threads: ``RestartCheck``) is refused.
    public init(
        configPath: String, running: MoongateConfiguration? = nil, policy: PolicyHost, metrics: ProxyMetrics,
        logger: Logger, watch: Bool, interval: Duration = .milliseconds(100),
        onLoaded: (@Sendable (MoongateConfiguration) -> Void)? = nil
    ) {
        self.onLoaded = onLoaded
        self.configPath = configPath
        self.running = running
        self.policy = policy
        self.metrics = metrics
        self.logger = logger
        self.watch = watch
        self.interval = interval
        if let generation = policy.generation { remember(generation.spec) }
    }

    /// The last reload attempt, if any.
    public var lastAttempt: ReloadAttempt? { state.withLock { $0.last } }

    /// Why the live generation loaded (the reason of the last successful reload).
    public var lastLoadedReason: String? { state.withLock { $0.lastLoadedReason } }

    /// SHA-256 of every file of the live generation.
    public var digests: [String: String] { state.withLock { $0.digests } }

    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    _ = self.reload(reason: "SIGHUP")
                }
            }
            if watch {
                group.addTask { await self.watchFiles() }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }

    private func watchFiles() async {
        let trigger = InotifyTrigger()
        trigger?.watch(watchedPaths)
        var lastPoll = ContinuousClock.now
        while !Task.isCancelled {
            // With inotify: a cheap non-blocking read every 10 ms, and a stat sweep once a second
            // as a safety net. Without: a stat sweep every `interval`.
            try? await Task.sleep(for: trigger == nil ? interval : .milliseconds(10))
            let woken = trigger?.drain() ?? true
            let now = ContinuousClock.now
            guard woken || now - lastPoll >= .seconds(1) else { continue }
            lastPoll = now
            guard changed() else { continue }
            // Debounce: editors write, rename and chmod in bursts; wait until the files are quiet.
            var quiet = 0
            while quiet < 2 && !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(10))
                _ = trigger?.drain()
                quiet = changed() ? 0 : quiet + 1
            }
            _ = reload(reason: "file change")
            trigger?.watch(watchedPaths)
        }
    }

    private var watchedPaths: [String] { state.withLock { Array($0.fingerprints.keys) } }

    /// True when a watched file's fingerprint moved since the last look (and records the new one).
    private func changed() -> Bool {
        let paths = state.withLock { Array($0.fingerprints.keys) }
        var moved = false
        for path in paths {
            let now = Self.fingerprint(path)
            let before = state.withLock { $0.fingerprints[path] ?? nil }
            if now != before {
                moved = true
                state.withLock { $0.fingerprints[path] = now }
            }
        }
        return moved
    }

    private static func fingerprint(_ path: String) -> Fingerprint? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Fingerprint(
            device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
            modified: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec))
    }

    /// Loads a new generation and publishes it if everything passes. Safe to call from any thread;
    /// never call it on an event loop (it compiles and runs tests).
    @discardableResult
    public func reload(reason: String) -> ReloadAttempt {
        let started = ContinuousClock.now
        // One reload at a time; a request during one waits for it.
        return reloading.withLock { _ in
            let attempt = loadAndPublish(reason: reason, started: started)
            state.withLock { $0.last = attempt }
            return attempt
        }
    }

    private func loadAndPublish(reason: String, started: ContinuousClock.Instant) -> ReloadAttempt {
        func elapsed() -> Double {
            let d = ContinuousClock.now - started
            return Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
        }
        let id = state.withLock { $0.nextID }
        do {
            let config = try ConfigLoader.load(path: configPath)
            if let running, case let changes = RestartCheck.changes(from: running, to: config), !changes.isEmpty {
                throw RestartRequired(message: RestartCheck.message(changes))
            }
            let spec = try PolicySpec.read(config.policy)
            let generation = try PolicyGeneration.load(spec, id: id)
            policy.publish(generation, config: config)
            onLoaded?(config)
            state.withLock {
                $0.nextID += 1
                $0.lastLoadedReason = reason
            }
            remember(generation.spec)  // with the data files its plugins loaded
            metrics.reload(result: "loaded")
            let ms = elapsed()
            logger.info(
                "policy reloaded",
                metadata: [
                    "generation": "\(id)", "reason": "\(reason)", "ms": "\(ms)", "tests": "\(generation.testResults.count)",
                    "clusters": "\(config.clusters.count)",
                ])
            return ReloadAttempt(result: "loaded", reason: reason, at: wallClock(), generation: id, error: nil, configError: nil, milliseconds: ms)
        } catch let error as PolicyLoadError {
            watchConfiguredFiles()
            metrics.reload(result: "rejected")
            logger.error(
                "policy reload rejected; the running generation stays",
                metadata: [
                    "reason": "\(reason)", "step": "\(error.step.rawValue)", "plugin": "\(error.plugin ?? "-")",
                    "file": "\(error.file)", "line": "\(error.line.map(String.init) ?? "-")", "error": "\(error.message)",
                    "test": "\(error.testName ?? "-")",
                ])
            return ReloadAttempt(result: "rejected", reason: reason, at: wallClock(), generation: nil, error: error, configError: nil, milliseconds: elapsed())
        } catch {
            metrics.reload(result: "rejected")
            logger.error("policy reload rejected; the running generation stays", metadata: ["reason": "\(reason)", "error": "\(error)"])
            return ReloadAttempt(
                result: "rejected", reason: reason, at: wallClock(), generation: nil, error: nil, configError: "\(error)",
                milliseconds: elapsed())
        }
    }

    /// After a rejection, also watches every file the config now names, so fixing a new plugin file
    /// is noticed.
    private func watchConfiguredFiles() {
        guard let config = try? ConfigLoader.load(path: configPath) else { return }
        let paths = config.policy.plugins.map(\.file) + config.policy.fixtures
        state.withLock { state in
            for path in paths where state.fingerprints[path] == nil {
                state.fingerprints[path] = Self.fingerprint(path)
            }
        }
    }

    /// Starts watching the files of `spec` (and the config file) and records their digests.
    private func remember(_ spec: PolicySpec) {
        var prints: [String: Fingerprint?] = [configPath: Self.fingerprint(configPath)]
        var digests: [String: String] = [:]
        for plugin in spec.plugins {
            prints[plugin.path] = Self.fingerprint(plugin.path)
            digests[plugin.path] = SHA256.hex(Array(plugin.source.utf8))
        }
        for fixture in spec.fixtures {
            prints[fixture.path] = Self.fingerprint(fixture.path)
            digests[fixture.path] = SHA256.hex(Array(fixture.text.utf8))
        }
        for file in spec.dataFiles {  // files plugins loaded (htpasswd): watched like scripts
            prints[file.path] = Self.fingerprint(file.path)
            digests[file.path] = SHA256.hex(file.bytes)
        }
        if let text = try? readFile(configPath) { digests[configPath] = SHA256.hex(Array(text.utf8)) }
        state.withLock {
            $0.fingerprints = prints
            $0.digests = digests
        }
    }

    private func wallClock() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}

/// A reload refused because it changes what only a restart applies.
struct RestartRequired: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
