internal import CArchive
import Sandbox

#if canImport(Glibc)
    import Glibc
#endif

/// Turns an overlayfs upper directory (the changes a RUN step made) into layer entries:
/// new and changed files as they are, a deleted path (overlay's 0/0 character device) as an OCI
/// whiteout `.wh.NAME`, a directory made opaque (`trusted.overlay.opaque=y`, `user.overlay.opaque` in rootless mode) as its directory entry plus
/// `.wh..wh..opq`. Hardlinks among the upper files are kept. Mtimes are passed through; the writer
/// clamps them to SOURCE_DATE_EPOCH.
public struct UpperDirectoryDiff {
    public var limits: LayerLimits

    public init(limits: LayerLimits = .standard) {
        self.limits = limits
    }

    /// The step made a name (or a symlink target) that is not valid UTF-8: layer format 1 stores UTF-8
    /// names only, so the step's layer cannot hold it and the build stops, naming it.
    public struct NameNotUTF8: HermeticError {
        /// Already `displayable`.
        public var path: String
        public var what = "file name"
        public var description: String {
            "made \"\(path)\", whose \(what) is not valid UTF-8 (layers store UTF-8 names)"
        }
    }

    public func entries(ofUpperDirectory upper: String) throws -> [LayerEntry] {
        var entries: [LayerEntry] = []
        var firstPathByInode: [String: String] = [:]
        // Iterative (directories still to list), sorted per directory: a step can nest thousands deep.
        var pending: [(directory: String, relative: String)] = [(upper, "")]
        while let (directory, relative) = pending.popLast() {
            let subdirectories = try list(
                directory, relative: relative, into: &entries, firstPathByInode: &firstPathByInode)
            pending.append(contentsOf: subdirectories.reversed())
        }
        return entries
    }

    /// Adds one directory's entries (sorted); returns its subdirectories, to list next.
    private func list(
        _ directory: String, relative: String, into entries: inout [LayerEntry],
        firstPathByInode: inout [String: String]
    ) throws -> [(directory: String, relative: String)] {
        var subdirectories: [(directory: String, relative: String)] = []
        let listed: [String]?
        do {
            listed = try FileSystem.directoryNames(strict: directory)
        } catch let error as NonUTF8NameError {
            let prefix = relative.isEmpty ? "" : relative + "/"
            throw NameNotUTF8(path: displayable(bytes: Array(prefix.utf8) + error.name))
        }
        guard let names = listed else { throw SystemError("opendir", path: directory, errno: errno) }
        for name in names.sorted() {
            let hostPath = directory + "/" + name
            let path = relative.isEmpty ? name : relative + "/" + name
            var info = stat()
            guard lstat(hostPath, &info) == 0 else { throw SystemError("lstat", path: hostPath, errno: errno) }
            guard entries.count < limits.maxEntries else {
                throw SystemError("walk (more than \(limits.maxEntries) entries)", path: hostPath, errno: E2BIG)
            }
            let mode = UInt32(info.st_mode) & 0o7777
            let mtime = Int64(info.st_mtim.tv_sec)
            func entry(_ kind: LayerEntry.Kind) -> LayerEntry {
                LayerEntry(path: path, kind: kind, mode: mode, uid: info.st_uid, gid: info.st_gid, mtime: mtime)
            }
            switch info.st_mode & S_IFMT {
            case S_IFCHR where info.st_rdev == 0:
                // overlayfs records a deletion as a 0/0 character device.
                entries.append(LayerEntry(path: whiteoutPath(path), kind: .regular(.bytes([])), mode: 0, mtime: mtime))
            case S_IFDIR:
                entries.append(entry(.directory))
                if Self.isOpaque(hostPath) {
                    entries.append(
                        LayerEntry(
                            path: path + "/.wh..wh..opq", kind: .regular(.bytes([])), mode: 0,
                            mtime: mtime))
                }
                subdirectories.append((hostPath, path))
            case S_IFREG:
                let inode = "\(info.st_dev):\(info.st_ino)"
                if info.st_nlink > 1, let first = firstPathByInode[inode] {
                    entries.append(entry(.hardlink(target: first)))
                } else {
                    if info.st_nlink > 1 { firstPathByInode[inode] = path }
                    entries.append(entry(.regular(.file(path: hostPath, size: Int64(info.st_size)))))
                }
            case S_IFLNK:
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let length = readlink(hostPath, &buffer, buffer.count - 1)
                guard length >= 0 else { throw SystemError("readlink", path: hostPath, errno: errno) }
                let bytes = buffer[0..<length].map { UInt8(bitPattern: $0) }
                guard let target = String(validating: bytes, as: UTF8.self) else {
                    throw NameNotUTF8(path: displayable(bytes: Array(path.utf8)), what: "symlink target")
                }
                entries.append(entry(.symlink(target: target)))
            case S_IFIFO:
                entries.append(entry(.fifo))
            case S_IFCHR:
                entries.append(
                    entry(.characterDevice(major: Self.major(info.st_rdev), minor: Self.minor(info.st_rdev))))
            case S_IFBLK:
                entries.append(entry(.blockDevice(major: Self.major(info.st_rdev), minor: Self.minor(info.st_rdev))))
            default:
                continue  // sockets have no place in a layer
            }
        }
        return subdirectories
    }

    private func whiteoutPath(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return ".wh." + path }
        return String(path[...slash]) + ".wh." + path[path.index(after: slash)...]
    }

    /// glibc's `dev_t` encoding (the `major`/`minor` macros are not imported into Swift).
    static func major(_ device: dev_t) -> UInt32 {
        UInt32(truncatingIfNeeded: ((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff))
    }

    static func minor(_ device: dev_t) -> UInt32 {
        UInt32(truncatingIfNeeded: (device & 0xff) | ((device >> 12) & ~0xff))
    }

    static func isOpaque(_ path: String) -> Bool {
        var value = [UInt8](repeating: 0, count: 8)
        let count = lgetxattr(path, UserNamespace.overlayXattrPrefix + "opaque", &value, value.count)
        return count == 1 && value[0] == UInt8(ascii: "y")
    }
}
