import Provenance

#if canImport(Glibc)
    import Glibc
#endif

/// Copies a file that must be a given blob into a new file, hashing it on the way: the one copy loop behind
/// the exporters' layouts (`OCILayoutWriter.putBlob(copyingFile:)`) and the build cache's (`CacheLayout`).
enum CheckedFileCopy {
    /// Why the copy is not the blob: the source is missing, a symlink (where none is followed), not a
    /// regular file, or its bytes are not the size and digest asked for. The description is a clause that
    /// follows the source's name (`… is a symlink`).
    enum Refusal: Error, CustomStringConvertible {
        case missing
        case symlink
        case notRegularFile
        case moreBytes(than: Int64)
        case fewerBytes(Int64, than: Int64)
        case otherDigest(Digest, not: Digest)

        var description: String {
            switch self {
            case .missing: "is missing"
            case .symlink: "is a symlink"
            case .notRegularFile: "is not a regular file"
            case .moreBytes(let size): "has more bytes than \(size)"
            case .fewerBytes(let found, let size): "has \(found) bytes, fewer than \(size)"
            case .otherDigest(let found, let digest): "its bytes have digest \(found), not \(digest)"
            }
        }
    }

    /// Copies `source` to the new file `destination` (mode 0644 whatever the umask), hashing it; fails with
    /// a `Refusal` (and no `destination`) unless its bytes are exactly `size` bytes with `digest`. Reading
    /// stops past `size`: a longer file is not the blob, whatever follows. A FIFO or a device is refused,
    /// not read; a symlink is followed only with `followSymlinks`.
    static func copy(_ source: String, to destination: String, digest: Digest, size: Int64, followSymlinks: Bool)
        throws
    {
        let input = open(source, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (followSymlinks ? 0 : O_NOFOLLOW))
        guard input >= 0 else {
            let code = errno
            if code == ELOOP && !followSymlinks { throw Refusal.symlink }
            if code == ENOENT { throw Refusal.missing }
            throw SystemError("open", path: source, errno: code)
        }
        defer { close(input) }
        var info = stat()
        guard fstat(input, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { throw Refusal.notRegularFile }
        let output = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard output >= 0 else { throw SystemError("create", path: destination, errno: errno) }
        var complete = false
        defer {
            close(output)
            if !complete { unlink(destination) }
        }
        fchmod(output, 0o644)  // outputs must not depend on the builder's umask
        let hasher = SHA256Hasher()
        var total: Int64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while total <= size {
            let count = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw SystemError("read", path: source, errno: errno)
            }
            if count == 0 { break }
            total += Int64(count)
            guard total <= size else { break }
            try buffer.withUnsafeBytes { bytes in
                let chunk = UnsafeRawBufferPointer(rebasing: bytes[0..<count])
                hasher.update(chunk)
                try FileSystem.writeAll(output, chunk, path: destination)
            }
        }
        if total > size { throw Refusal.moreBytes(than: size) }
        if total < size { throw Refusal.fewerBytes(total, than: size) }
        let found = hasher.finalize()
        guard found == digest else { throw Refusal.otherDigest(found, not: digest) }
        complete = true
    }
}
