internal import CArchive  // sys/xattr.h (lgetxattr)
import Sandbox

#if canImport(Glibc)
    import Glibc
#endif

/// The layer of a RUN step: exactly the differences between the step's result and the stage's
/// filesystem before it (SPEC §3, "RUN layers"), the same whichever way the step's root was made.
///
/// - From an overlayfs upper directory (`entries(ofUpperDirectory:lower:)`): only what the upper
///   directory names can differ. A copied-up file or directory that ends equal to the lower one (opened
///   for writing and not written, `chmod` to the same mode) is not a change. A deletion (overlay's 0/0
///   character device) is a whiteout `.wh.NAME`. An opaque directory (`trusted.overlay.opaque`, or
///   `user.overlay.opaque` in rootless mode) is compared in full with the lower directory: lower children
///   it does not have become whiteouts, so no layer carries `.wh..wh..opq`.
/// - From a whole copy of the root (`entries(ofCopy:lower:untouched:)`), where overlayfs cannot be
///   mounted: every path is compared; a file whose inode change time is the one it had right after the
///   copy was not touched (userspace cannot set ctime) and is not read again.
///
/// Equal means same type, permission bits, owner, mtime (with nanoseconds), and same bytes, symlink
/// target or device number. A directory is in the layer when it is new or changed, or holds something
/// that is. Hardlinks among the new files are kept. Mtimes are passed through; the writer clamps them.
public struct StepDiff {
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

    /// Inode numbers and change times (nanoseconds since the epoch) of the copy's non-directories right
    /// after it was made.
    public typealias Untouched = [UInt64: Int64]

    static func nanoseconds(_ time: timespec) -> Int64 { Int64(time.tv_sec) &* 1_000_000_000 &+ Int64(time.tv_nsec) }

    public func entries(ofUpperDirectory upper: String, lower: String) throws -> [LayerEntry] {
        try walk(result: upper, lower: lower, overlay: true, untouched: [:])
    }

    public func entries(ofCopy copy: String, lower: String, untouched: Untouched) throws -> [LayerEntry] {
        try walk(result: copy, lower: lower, overlay: false, untouched: untouched)
    }

    private struct Task {
        var relative: String
        var result: String
        /// The lower directory at the same path, when there is one.
        var lower: String?
        /// Compare every name of both sides (an opaque or new directory, or the whole copy), not only
        /// the names an upper directory lists.
        var full: Bool
    }

    private func walk(result: String, lower: String, overlay: Bool, untouched: Untouched) throws -> [LayerEntry] {
        var changed: [LayerEntry] = []
        // Directories equal to their lower one: in the layer only above a change.
        var unchangedDirectories: [String: LayerEntry] = [:]
        var firstPathByInode: [UInt64: String] = [:]
        var count = 0
        // Iterative, sorted per directory: a step can nest thousands deep.
        var pending = [Task(relative: "", result: result, lower: lower, full: !overlay)]
        while let task = pending.popLast() {
            var names = Set(try listNames(task.result, relative: task.relative))
            if task.full, let lowerDirectory = task.lower {
                names.formUnion(FileSystem.directoryNames(lowerDirectory) ?? [])
            }
            var subdirectories: [Task] = []
            for name in names.sorted() {
                let path = task.relative.isEmpty ? name : task.relative + "/" + name
                let resultPath = task.result + "/" + name
                count += 1
                guard count <= limits.maxEntries else {
                    throw SystemError("walk (more than \(limits.maxEntries) entries)", path: resultPath, errno: E2BIG)
                }
                var mine = stat()
                var present = lstat(resultPath, &mine) == 0
                if !present && errno != ENOENT { throw SystemError("lstat", path: resultPath, errno: errno) }
                var theirs = stat()
                let inLower = task.lower.map { lstat($0 + "/" + name, &theirs) == 0 } ?? false
                if present && (mine.st_mode & S_IFMT) == S_IFCHR && mine.st_rdev == 0 && overlay {
                    present = false  // overlayfs records a deletion as a 0/0 character device
                }
                guard present else {
                    if inLower {
                        changed.append(
                            LayerEntry(path: whiteoutPath(path), kind: .regular(.bytes([])), mode: 0, mtime: 0))
                    }
                    continue
                }
                let lowerIsDirectory = inLower && (theirs.st_mode & S_IFMT) == S_IFDIR
                if (mine.st_mode & S_IFMT) == S_IFDIR {
                    let entry = Self.entry(path, mine, .directory)
                    if lowerIsDirectory && Self.sameMetadata(mine, theirs) {
                        unchangedDirectories[path] = entry
                    } else {
                        changed.append(entry)
                    }
                    let lowerChild = lowerIsDirectory ? task.lower.map { $0 + "/" + name } : nil
                    let full = task.full || lowerChild == nil || (overlay && Self.isOpaque(resultPath))
                    subdirectories.append(Task(relative: path, result: resultPath, lower: lowerChild, full: full))
                    continue
                }
                if inLower, let lowerDirectory = task.lower,
                    try same(
                        resultPath, mine, lowerDirectory + "/" + name, theirs, untouched: overlay ? nil : untouched)
                {
                    continue
                }
                guard let entry = try changedEntry(path, resultPath, mine, firstPathByInode: &firstPathByInode)
                else { continue }
                changed.append(entry)
            }
            pending.append(contentsOf: subdirectories.reversed())
        }
        // Each change brings the unchanged directories above it, once.
        var included = Set<String>()
        var ancestors: [LayerEntry] = []
        for entry in changed {
            var path = Substring(entry.path)
            while let slash = path.lastIndex(of: "/") {
                path = path[..<slash]
                let key = String(path)
                guard included.insert(key).inserted else { break }
                if let directory = unchangedDirectories[key] { ancestors.append(directory) }
            }
        }
        return changed + ancestors
    }

    private func listNames(_ directory: String, relative: String) throws -> [String] {
        do {
            guard let names = try FileSystem.directoryNames(strict: directory) else {
                throw SystemError("opendir", path: directory, errno: errno)
            }
            return names
        } catch let error as NonUTF8NameError {
            let prefix = relative.isEmpty ? "" : relative + "/"
            throw NameNotUTF8(path: displayable(bytes: Array(prefix.utf8) + error.name))
        }
    }

    /// The layer entry for a new or changed non-directory; nil for what a layer cannot hold (sockets).
    private func changedEntry(
        _ path: String, _ hostPath: String, _ info: stat, firstPathByInode: inout [UInt64: String]
    ) throws -> LayerEntry? {
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            let inode = UInt64(info.st_ino)
            if info.st_nlink > 1, let first = firstPathByInode[inode] {
                return Self.entry(path, info, .hardlink(target: first))
            }
            if info.st_nlink > 1 { firstPathByInode[inode] = path }
            return Self.entry(path, info, .regular(.file(path: hostPath, size: Int64(info.st_size))))
        case S_IFLNK:
            guard let target = try symlinkTarget(hostPath) else {
                throw NameNotUTF8(path: displayable(bytes: Array(path.utf8)), what: "symlink target")
            }
            return Self.entry(path, info, .symlink(target: target))
        case S_IFIFO:
            return Self.entry(path, info, .fifo)
        case S_IFCHR:
            return Self.entry(
                path, info,
                .characterDevice(
                    major: FileSystem.deviceMajor(info.st_rdev), minor: FileSystem.deviceMinor(info.st_rdev)))
        case S_IFBLK:
            return Self.entry(
                path, info,
                .blockDevice(major: FileSystem.deviceMajor(info.st_rdev), minor: FileSystem.deviceMinor(info.st_rdev)))
        default:
            return nil  // sockets have no place in a layer
        }
    }

    /// Whether a non-directory of the result equals the lower entry at the same path.
    private func same(
        _ path: String, _ mine: stat, _ lowerPath: String, _ theirs: stat, untouched: Untouched?
    ) throws -> Bool {
        guard (mine.st_mode & S_IFMT) == (theirs.st_mode & S_IFMT), Self.sameMetadata(mine, theirs) else {
            return false
        }
        if let untouched, untouched[UInt64(mine.st_ino)] == Self.nanoseconds(mine.st_ctim) {
            return true
        }
        switch mine.st_mode & S_IFMT {
        case S_IFREG:
            guard mine.st_size == theirs.st_size else { return false }
            return try sameBytes(path, lowerPath)
        case S_IFLNK:
            return try symlinkBytes(path) == (try symlinkBytes(lowerPath))
        case S_IFCHR, S_IFBLK:
            return mine.st_rdev == theirs.st_rdev
        default:
            return true
        }
    }

    private func sameBytes(_ a: String, _ b: String) throws -> Bool {
        let first = open(a, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard first >= 0 else { throw SystemError("open", path: a, errno: errno) }
        defer { close(first) }
        let second = open(b, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard second >= 0 else { throw SystemError("open", path: b, errno: errno) }
        defer { close(second) }
        var left = [UInt8](repeating: 0, count: 1 << 16)
        var right = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = try readFully(first, &left, path: a)
            let other = try readFully(second, &right, path: b)
            guard count == other else { return false }
            if count == 0 { return true }
            if !left.withUnsafeBytes({ l in
                right.withUnsafeBytes { r in memcmp(l.baseAddress!, r.baseAddress!, count) == 0 }
            }) {
                return false
            }
        }
    }

    private func readFully(_ fd: Int32, _ buffer: inout [UInt8], path: String) throws -> Int {
        var filled = 0
        while filled < buffer.count {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw SystemError("read", path: path, errno: errno) }
            if count == 0 { break }
            filled += count
        }
        return filled
    }

    private func symlinkBytes(_ path: String) throws -> [UInt8] {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink(path, &buffer, buffer.count - 1)
        guard length >= 0 else { throw SystemError("readlink", path: path, errno: errno) }
        return buffer[0..<length].map { UInt8(bitPattern: $0) }
    }

    private func symlinkTarget(_ path: String) throws -> String? {
        String(validating: try symlinkBytes(path), as: UTF8.self)
    }

    private func whiteoutPath(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return ".wh." + path }
        return String(path[...slash]) + ".wh." + path[path.index(after: slash)...]
    }

    private static func entry(_ path: String, _ info: stat, _ kind: LayerEntry.Kind) -> LayerEntry {
        LayerEntry(
            path: path, kind: kind, mode: UInt32(info.st_mode) & 0o7777, uid: info.st_uid, gid: info.st_gid,
            mtime: Int64(info.st_mtim.tv_sec))
    }

    static func sameMetadata(_ a: stat, _ b: stat) -> Bool {
        (a.st_mode & 0o7777) == (b.st_mode & 0o7777) && a.st_uid == b.st_uid && a.st_gid == b.st_gid
            && a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec
    }

    static func isOpaque(_ path: String) -> Bool {
        var value = [UInt8](repeating: 0, count: 8)
        let count = lgetxattr(path, UserNamespace.overlayXattrPrefix + "opaque", &value, value.count)
        return count == 1 && value[0] == UInt8(ascii: "y")
    }
}
