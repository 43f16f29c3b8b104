import CLuaShims
import LuaKit

/// A file a plugin loaded while it initialised (an htpasswd file for `moongate.htpasswd`): part of
/// its generation like the scripts. The load that checks a generation reads it from disk; every Lua
/// state of that generation then gets these bytes, so each event loop serves the file that was
/// checked and none of them reads the disk. The reloader watches it like a script.
public struct PolicyDataFile: Sendable, Hashable {
    /// The path as resolved (the config file's folder prepended to a relative path).
    public let path: String
    public let bytes: [UInt8]

    /// Creates a data file.
    public init(path: String, bytes: [UInt8]) {
        self.path = path
        self.bytes = bytes
    }
}

extension LuaState {
    /// Sets the folder relative data-file paths resolve against, and the copies of the files the
    /// generation already read.
    func installDataFiles(folder: String, files: [PolicyDataFile]) {
        moon_set_data_folder(pointer, folder)
        for file in files {
            _ = file.bytes.withUnsafeBufferPointer { bytes in
                bytes.withMemoryRebound(to: CChar.self) { chars in
                    moon_preload_data_file(pointer, file.path, chars.baseAddress, chars.count)
                }
            }
        }
    }

    /// The data files this state's plugins loaded, in the order they first did.
    var dataFilesLoaded: [PolicyDataFile] {
        var files: [PolicyDataFile] = []
        for index in 0..<moon_data_file_count(pointer) {
            var path: UnsafePointer<CChar>?
            var bytes: UnsafePointer<CChar>?
            var length = 0
            guard moon_data_file_at(pointer, index, &path, &bytes, &length) != 0, let path else { continue }
            let copy = bytes.map { Array(UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
            files.append(PolicyDataFile(path: String(cString: path), bytes: copy))
        }
        return files
    }
}

extension PolicyInstance {
    /// The data files this instance's plugins loaded (``PolicyDataFile``).
    public var dataFiles: [PolicyDataFile] { lua.dataFilesLoaded }
}
