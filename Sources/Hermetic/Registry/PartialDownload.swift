#if canImport(Glibc)
    import Glibc
#endif

/// A body being written into the store's `tmp/`: the file, the hash of the bytes it holds, their count.
/// A blob cut short keeps what it has, so the next try can ask for the rest (`Range`); the file is removed
/// unless it was moved into the store.
final class PartialDownload {
    let path: String
    private let fd: Int32
    private var hasher = SHA256Hasher()
    private(set) var count: Int64 = 0
    private var adopted = false

    init(store: ContentStore, digest: Digest) throws {
        path = store.temporaryDirectory + "/pull-\(digest.hex)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError("create", path: path, errno: errno) }
    }

    deinit {
        close(fd)
        if !adopted { unlink(path) }
    }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        hasher.update(bytes)
        try FileSystem.writeAll(fd, bytes, path: path)
        count += Int64(bytes.count)
    }

    /// Drops what was written (the server sent the whole body again).
    func restart() throws {
        guard ftruncate(fd, 0) == 0, lseek(fd, 0, SEEK_SET) == 0 else {
            throw SystemError("truncate", path: path, errno: errno)
        }
        hasher = SHA256Hasher()
        count = 0
    }

    /// The digest of what was written; the hash is finished, so nothing more may be appended.
    func finish() -> Digest { hasher.finalize() }

    /// Moves the file into the store as `digest` (its verified digest).
    func adopt(into store: ContentStore, as digest: Digest) throws {
        _ = try store.adopt(fileAt: path, as: digest)
        adopted = true
    }
}
