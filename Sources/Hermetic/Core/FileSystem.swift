import Sandbox

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
    ///
    /// `allowPipe`: a FIFO or pipe is read too (what a person hands over as `-f -`, `-f /dev/stdin` or
    /// `--sign-key <(…)`), without blocking: with no writer it reads as empty, and a writer that sends
    /// nothing for `pipeTimeoutSeconds` is an error.
    public static func readFile(
        _ path: String, limit: Int, followSymlinks: Bool = true, allowPipe: Bool = false
    ) throws -> [UInt8] {
        // O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one forever.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (followSymlinks ? 0 : O_NOFOLLOW))
        guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SystemError("fstat", path: path, errno: errno) }
        if allowPipe && (info.st_mode & S_IFMT) == S_IFIFO {
            return try readPipe(fd, path: path, limit: limit)
        }
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

    public static let pipeTimeoutSeconds: Int32 = 60

    private static func readPipe(_ fd: Int32, path: String, limit: Int) throws -> [UInt8] {
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            // Read first: with no writer a FIFO reads as end of file at once (poll would wait for one).
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                guard result.count + count <= limit else { throw SystemError("read", path: path, errno: EFBIG) }
                result.append(contentsOf: buffer[0..<count])
                continue
            }
            if count == 0 { return result }
            if errno == EINTR { continue }
            guard errno == EAGAIN else { throw SystemError("read", path: path, errno: errno) }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, pipeTimeoutSeconds * 1000)
            if ready < 0 && errno != EINTR { throw SystemError("poll", path: path, errno: errno) }
            if ready == 0 {
                throw SystemError("read (nothing came for \(pipeTimeoutSeconds) s)", path: path, errno: ETIMEDOUT)
            }
        }
    }

    /// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
    public static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws {
        let temporary = try writeTemporary(bytes, beside: path, mode: mode)
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw SystemError("rename to", path: path, errno: code)
        }
    }

    /// Writes `bytes` to a new temporary file in `path`'s directory and returns its path.
    public static func writeTemporary(_ bytes: [UInt8], beside path: String, mode: mode_t = 0o644) throws -> String {
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
        ok = true
        return temporary
    }

    /// The path with symlinks of its existing part resolved (`realpath` of the longest existing ancestor,
    /// the rest appended), and `.`/`..` removed.
    public static func resolvedPath(_ path: String) -> String {
        var existing = absolute(path)
        var rest: [String] = []
        while !existing.isEmpty && existing != "/" {
            if let resolved = realpath(existing, nil) {
                defer { free(resolved) }
                existing = String(cString: resolved)
                break
            }
            rest.insert(String(existing.split(separator: "/").last ?? ""), at: 0)
            existing = parentDirectory(of: existing)
        }
        var parts: [Substring] = []
        for part in (existing.split(separator: "/") + rest.map { Substring($0) }) {
            if part == "." || part.isEmpty { continue }
            if part == ".." {
                _ = parts.popLast()
                continue
            }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// Removes a tree without following symlinks; missing paths are fine. Names are handled as bytes
    /// (`openat`/`unlinkat`), so a name that is not UTF-8 goes too. At most `removalDepth` directories are
    /// open at once: a subtree deeper than that (a RUN step can nest directories thousands deep) is first
    /// moved up beside the root's contents, so neither the stack nor the descriptors run out.
    public static func removeTree(_ root: String) {
        var info = stat()
        guard lstat(root, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            unlink(root)
            return
        }
        guard let top = openDirectoryForRemoval(AT_FDCWD, Array(root.utf8)) else {
            rmdir(root)
            return
        }
        defer { rmdir(root) }
        defer { close(top) }
        var hoisted: [[UInt8]] = []
        var counter = 0
        /// Moves `name` to a free `.hermetic-hoisted-N` directly in the root; nil if it cannot be moved.
        func hoist(_ name: [UInt8], from directory: Int32) -> [UInt8]? {
            while true {
                counter += 1
                let target = Array(".hermetic-hoisted-\(counter)".utf8)
                var existing = stat()
                if fstatat(top, target.cString, &existing, AT_SYMLINK_NOFOLLOW) == 0 { continue }
                return renameat(directory, name.cString, top, target.cString) == 0 ? target : nil
            }
        }
        func clear(_ directory: Int32, depth: Int) {
            for name in directoryNames(descriptor: directory) ?? [] {
                var status = stat()
                guard fstatat(directory, name.cString, &status, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
                guard (status.st_mode & S_IFMT) == S_IFDIR else {
                    unlinkat(directory, name.cString, 0)
                    continue
                }
                if depth >= removalDepth {
                    if let moved = hoist(name, from: directory) { hoisted.append(moved) }
                    continue
                }
                if let child = openDirectoryForRemoval(directory, name) {
                    clear(child, depth: depth + 1)
                    close(child)
                }
                unlinkat(directory, name.cString, AT_REMOVEDIR)
            }
        }
        clear(top, depth: 1)
        while let name = hoisted.popLast() {
            if let child = openDirectoryForRemoval(top, name) {
                clear(child, depth: 2)
                close(child)
            }
            unlinkat(top, name.cString, AT_REMOVEDIR)
        }
    }

    /// Directories `removeTree` holds open at once.
    static let removalDepth = 32

    /// Opens a directory (never through a symlink) to empty it; one that is not readable (mode 0555 or
    /// 0000 from an image, for a builder that is not root) is made so first.
    private static func openDirectoryForRemoval(_ parent: Int32, _ name: [UInt8]) -> Int32? {
        let flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
        var fd = openat(parent, name.cString, flags)
        if fd < 0 && errno == EACCES {
            _ = fchmodat(parent, name.cString, 0o700, 0)
            fd = openat(parent, name.cString, flags)
        }
        guard fd >= 0 else { return nil }
        // Entries can only be unlinked from a writable directory.
        _ = fchmod(fd, 0o700)
        return fd
    }

    /// A `dev_t`'s major and minor numbers in glibc's encoding (its `major`/`minor` macros are not imported
    /// into Swift): for the device entries of RUN layers, COPY sources and the context digest.
    public static func deviceMajor(_ device: dev_t) -> UInt32 {
        UInt32(truncatingIfNeeded: ((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff))
    }

    public static func deviceMinor(_ device: dev_t) -> UInt32 {
        UInt32(truncatingIfNeeded: (device & 0xff) | ((device >> 12) & ~0xff))
    }

    /// The last component of `path` (the path itself when it has no `/`).
    public static func baseName(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
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
    /// Hands the bytes of the file at `path` to `body`, a megabyte at a time, in order.
    public static func readChunks(_ path: String, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = read(fd, buffer.baseAddress, buffer.count)
            if count < 0 {
                if errno == EINTR { continue }
                throw SystemError("read", path: path, errno: errno)
            }
            if count == 0 { return }
            try body(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        }
    }
}

extension FileSystem {
    /// The names in a directory (without `.` and `..`), unsorted; nil when it cannot be opened. A name that
    /// is not valid UTF-8 cannot be a Swift `String`: it is left out here, and `directoryNames(strict:)`
    /// reports it instead.
    public static func directoryNames(_ path: String) -> [String]? {
        directoryByteNames(path).map { names in names.compactMap { String(validating: $0, as: UTF8.self) } }
    }

    /// The names in a directory as Strings; nil when it cannot be opened. A name that is not valid UTF-8
    /// throws `NonUTF8NameError` (naming it, escaped) unless `skipping` says it may be left out.
    public static func directoryNames(
        strict path: String, skipping mayOmit: (_ lossyName: String) -> Bool = { _ in false }
    ) throws -> [String]? {
        guard let raw = directoryByteNames(path) else { return nil }
        var names: [String] = []
        names.reserveCapacity(raw.count)
        for bytes in raw {
            if let name = String(validating: bytes, as: UTF8.self) {
                names.append(name)
            } else if !mayOmit(String(decoding: bytes, as: UTF8.self)) {
                throw NonUTF8NameError(directory: path, name: bytes)
            }
        }
        return names
    }

    /// The names in a directory as bytes (without `.` and `..`), unsorted; nil when it cannot be opened.
    public static func directoryByteNames(_ path: String) -> [[UInt8]]? {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return directoryNames(descriptor: fd)
    }

    /// The names in the directory open as `fd` (the descriptor stays open), as bytes.
    static func directoryNames(descriptor fd: Int32) -> [[UInt8]]? {
        let copy = dup(fd)
        guard copy >= 0 else { return nil }
        guard let stream = fdopendir(copy) else {
            close(copy)
            return nil
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [[UInt8]] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: &entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
            if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
            names.append(name)
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

    /// Renames `source` to `destination` only if nothing is there (renameat2's RENAME_NOREPLACE; where the
    /// filesystem lacks it, a check and then a plain rename). False, with errno set, when it failed.
    public static func renameNoReplace(_ source: String, to destination: String) -> Bool {
        if ProcessControl.rename(source, destination, .noReplace) { return true }
        guard errno == EINVAL || errno == ENOSYS else { return false }
        guard !exists(destination) else {
            errno = EEXIST
            return false
        }
        return rename(source, destination) == 0
    }

    /// Puts the complete directory `replacement` at `path`. What is there already is exchanged with it in
    /// one step (renameat2's RENAME_EXCHANGE: `path` is never missing) and then removed under the name
    /// `replacement` had. Where the filesystem cannot exchange, it is moved aside (beside `replacement`)
    /// first and removed only after the new one is in place.
    public static func replaceDirectory(at path: String, with replacement: String) throws {
        var aside: String?
        if exists(path) {
            if ProcessControl.rename(replacement, path, .exchange) {
                removeTree(replacement)
                return
            }
            guard errno == EINVAL || errno == ENOSYS else {
                throw SystemError("exchange with", path: path, errno: errno)
            }
            let holder = try makeTemporaryDirectory(in: parentDirectory(of: replacement), prefix: ".hermetic-old-")
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

/// A directory entry whose name is not valid UTF-8. Layer format 1 stores UTF-8 names only (and paths
/// are Swift Strings throughout the builder), so such a file is refused by name instead of left out.
public struct NonUTF8NameError: HermeticError {
    public var directory: String
    public var name: [UInt8]
    public var description: String {
        "\(displayable(directory))/\(displayable(bytes: name)): file name is not valid UTF-8"
    }
}
