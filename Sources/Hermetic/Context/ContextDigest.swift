import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// "Context digest format 1": a digest over exactly the files a build can see (after .dockerignore).
/// Entries are sorted by path (bytes); each contributes one record
/// `PATH NUL TYPE NUL MODE NUL SIZE NUL CONTENT NUL LINK LF`, where TYPE is `d`, `f`, `l` or `p`, MODE the
/// permission bits in octal, SIZE the byte size of a file (0 otherwise), CONTENT the file's sha256 hex
/// (empty otherwise) and LINK a symlink's target (empty otherwise). The digest is sha256 of the records.
/// Owners and mtimes are not part of it: a build never uses them.
public enum ContextDigest {
    public static func compute(_ context: BuildContext) throws -> Digest {
        let hasher = SHA256Hasher()
        for (relative, info) in try context.walk([]) {
            let path = relative.joined(separator: "/")
            let host = context.host(relative)
            var type = "f"
            var size: Int64 = 0
            var content = ""
            var link = ""
            switch info.st_mode & S_IFMT {
            case S_IFDIR: type = "d"
            case S_IFLNK:
                type = "l"
                link = try RootedPath.readLink(host)
            case S_IFIFO: type = "p"
            // COPY takes these too (a socket as an empty file, a device as a device): the digest covers them.
            case S_IFSOCK: type = "s"
            case S_IFCHR, S_IFBLK:
                type = (info.st_mode & S_IFMT) == S_IFCHR ? "c" : "b"
                link = "\(FileSystem.deviceMajor(info.st_rdev)):\(FileSystem.deviceMinor(info.st_rdev))"
            case S_IFREG:
                size = Int64(info.st_size)
                content = try context.fileDigest(host).hex
            default: continue
            }
            let record = "\(path)\0\(type)\0\(String(info.st_mode & 0o7777, radix: 8))\0\(size)\0\(content)\0\(link)\n"
            hasher.update(Array(record.utf8))
        }
        return hasher.finalize()
    }

    static func fileDigest(_ path: String) throws -> Digest {
        let file = try openRegularFile(path)
        defer { close(file.descriptor) }
        return try hash(descriptor: file.descriptor, path: path)
    }

    /// Opens a regular file for reading, never through a symlink; returns its descriptor and `fstat`.
    static func openRegularFile(_ path: String) throws -> (descriptor: Int32, info: stat) {
        // O_NONBLOCK and the check: a file swapped for a FIFO since the walk must not block the build.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let error = SystemError("fstat", path: path, errno: errno)
            close(fd)
            throw error
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw NotRegularFileError(path: path, mode: info.st_mode)
        }
        return (fd, info)
    }

    /// The sha256 of what is left to read from `descriptor`.
    static func hash(descriptor fd: Int32, path: String) throws -> Digest {
        let hasher = SHA256Hasher()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw SystemError("read", path: path, errno: errno)
            }
            if count == 0 { break }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        }
        return hasher.finalize()
    }
}

/// The build context's digest, computed at most once per build, by the first step that needs it (a RUN
/// binding the context, for its cache key) or by the provenance; stages running at once share it.
final class SharedContextDigest: @unchecked Sendable {
    private let context: BuildContext
    private let lock = NSLock()
    private var computed: Digest?

    init(_ context: BuildContext) { self.context = context }

    func value() throws -> Digest {
        try lock.withLock {
            if let computed { return computed }
            let digest = try ContextDigest.compute(context)
            computed = digest
            return digest
        }
    }
}
