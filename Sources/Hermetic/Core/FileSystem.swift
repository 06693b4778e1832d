#if canImport(Glibc)
    import Glibc
#endif

/// Small, exact wrappers over the file-system calls the builder needs; failures become `SystemError`s
/// that name the call and the path.
public enum FileSystem {
    public static func makeTemporaryDirectory(in parent: String, prefix: String) throws -> String {
        var template = Array("\(parent)/\(prefix)XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer -> Bool in
            mkdtemp(buffer.baseAddress!) != nil
        }
        guard made else { throw SystemError("mkdtemp", path: parent, errno: errno) }
        return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    public static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws {
        guard mkdir(path, mode) == 0 || errno == EEXIST else { throw SystemError("mkdir", path: path, errno: errno) }
    }

    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            try makeDirectory(current, mode: mode)
        }
    }

    public static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// The whole of a regular file (a symlink to one is followed unless `followSymlinks` is false), at most
    /// `limit` bytes. Anything else is refused before a byte is read: a FIFO would block the read (or the
    /// open) forever and a device may never end.
    public static func readFile(_ path: String, limit: Int, followSymlinks: Bool = true) throws -> [UInt8] {
        // O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one forever.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (followSymlinks ? 0 : O_NOFOLLOW))
        guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SystemError("fstat", path: path, errno: errno) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw NotRegularFileError(path: path, mode: info.st_mode)
        }
        // A regular file ignores O_NONBLOCK, but clear it so reads are plainly blocking.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw SystemError("read", path: path, errno: errno)
            }
            if count == 0 { break }
            guard result.count + count <= limit else {
                throw SystemError("read", path: path, errno: EFBIG)
            }
            result.append(contentsOf: buffer[0..<count])
        }
        return result
    }

    /// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
    public static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws {
        let directory = parentDirectory(of: path)
        var template = Array("\(directory)/.hermetic-tmp-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw SystemError("create temporary file in", path: directory, errno: errno) }
        let temporary = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var ok = false
        defer {
            if !ok { unlink(temporary) }
        }
        do {
            try bytes.withUnsafeBytes { try writeAll(fd, $0, path: temporary) }
        } catch {
            close(fd)
            throw error
        }
        fchmod(fd, mode)
        guard close(fd) == 0 else { throw SystemError("close", path: temporary, errno: errno) }
        guard rename(temporary, path) == 0 else { throw SystemError("rename to", path: path, errno: errno) }
        ok = true
    }

    /// Removes a tree without following symlinks. Missing paths are fine. Iterative, so a hostile depth
    /// (a RUN step can nest directories thousands deep) cannot exhaust the stack.
    public static func removeTree(_ root: String) {
        var pending: [(path: String, expanded: Bool)] = [(root, false)]
        var hoisted = 0
        while let (path, expanded) = pending.popLast() {
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            guard (info.st_mode & S_IFMT) == S_IFDIR else {
                unlink(path)
                continue
            }
            if expanded {
                rmdir(path)
                continue
            }
            // A directory that is not writable (e.g. mode 0555 from an image) still has to go.
            chmod(path, 0o700)
            pending.append((path, true))
            for name in directoryNames(path) ?? [] {
                var child = path + "/" + name
                // Past 2 KiB, move the subtree up beside the root, so no path ever exceeds PATH_MAX.
                if child.utf8.count > 2048 {
                    hoisted += 1
                    let moved = root + "/.hermetic-hoisted-\(hoisted)"
                    if rename(child, moved) == 0 { child = moved }
                }
                pending.append((child, false))
            }
        }
    }

    public static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// An absolute form of `path` (relative to the current directory), without resolving symlinks.
    public static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        let cwd = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return path == "." ? cwd : cwd + "/" + path
    }
}

extension FileSystem {
    /// The names in a directory (without `.` and `..`), unsorted; nil when it cannot be opened.
    public static func directoryNames(_ path: String) -> [String]? {
        guard let handle = opendir(path) else { return nil }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Writes all of `bytes` to `fd`, retrying short writes and EINTR; `path` names the file in errors.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw SystemError("write", path: path, errno: errno)
            }
            offset += written
        }
    }

    /// Puts the complete directory `replacement` at `path`: an existing directory there is moved aside
    /// first and removed only after the new one is in place.
    public static func replaceDirectory(at path: String, with replacement: String) throws {
        var aside: String?
        if exists(path) {
            let parent = parentDirectory(of: path)
            let holder = try makeTemporaryDirectory(in: parent, prefix: ".hermetic-old-")
            guard rename(path, holder + "/old") == 0 else {
                let code = errno
                rmdir(holder)
                throw SystemError("move aside", path: path, errno: code)
            }
            aside = holder
        }
        guard rename(replacement, path) == 0 else {
            let code = errno
            if let aside { rename(aside + "/old", path); rmdir(aside) }
            throw SystemError("rename into place", path: path, errno: code)
        }
        if let aside { removeTree(aside) }
    }
}

/// A path that had to be a regular file and is not.
public struct NotRegularFileError: HermeticError {
    public var path: String
    public var mode: mode_t
    /// What it is instead: "a FIFO", "a character device", …
    public var kind: String {
        switch mode & S_IFMT {
        case S_IFIFO: "a FIFO"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFDIR: "a directory"
        case S_IFSOCK: "a socket"
        default: "of an unknown type"
        }
    }
    public var description: String { "\(displayable(path)): not a regular file (\(kind))" }
}
