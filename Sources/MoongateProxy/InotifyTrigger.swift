#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Linux inotify as a fast trigger for the policy watcher: it watches the folders that hold the
/// watched files (and the folders their symlinks point into), so writes, atomic renames,
/// delete-and-recreate and symlink flips all wake it. It only says "something moved"; the
/// watcher's `stat` fingerprints decide what changed. Nil where inotify is unavailable (the
/// watcher then polls `stat`).
final class InotifyTrigger: Sendable {
    private let fd: Int32
    private let watched = Mutex<[String: Int32]>([:])

    init?() {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { return nil }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Watches the folders of `paths` (and of what they resolve to), dropping folders no longer needed.
    func watch(_ paths: [String]) {
        var folders = Set<String>()
        for path in paths {
            folders.insert(Self.folder(of: path))
            if let real = realpath(path, nil) {
                folders.insert(Self.folder(of: String(cString: real)))
                free(real)
            }
        }
        let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB | IN_MODIFY)
        watched.withLock { current in
            for (folder, wd) in current where !folders.contains(folder) {
                inotify_rm_watch(fd, wd)
                current[folder] = nil
            }
            for folder in folders where current[folder] == nil {
                let wd = inotify_add_watch(fd, folder, mask)
                if wd >= 0 { current[folder] = wd }
            }
        }
    }

    /// Reads every pending event; true when there was at least one.
    func drain() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 8192)
        var any = false
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return any }
            any = true
        }
    }

    private static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}
