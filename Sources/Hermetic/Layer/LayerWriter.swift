// Layer/ — layer entries in, layer blobs out (deterministic tar, chunked gzip/zstd) and back (the
// hostile-input-safe applier, the RUN step's diff).

/// Layer format 1 — the exact bytes `LayerWriter` produces for a list of `LayerEntry` values.
///
/// Entries and order
/// - Paths must be normalized (no leading `/`, no empty, `.` or `..` components, no trailing `/`),
///   contain no NUL, be at most 4096 bytes, and be unique; otherwise the write fails with
///   `LayerError.invalidEntry` naming the path. A path whose parent is present in the same
///   layer as a non-directory is refused too, and so is a component `.wh.`, `.wh..` or `.wh...`
///   (a whiteout naming no entry, which appliers refuse). Missing parents are not invented.
/// - Entries are sorted by path compared component by component as bytes (`a/b` < `a/b/c` <
///   `a.b`), so every directory precedes its contents and input order never matters.
/// - Hardlinks whose target is in the same layer are re-rooted so the group member that sorts
///   first carries the contents and the target's metadata, and the others are tar hardlink
///   entries (type `1`, size 0) to it. Hardlink targets not in the layer are written as given.
///   A hardlink to a non-regular entry of the layer is refused.
///
/// Headers
/// - Tar format: libarchive "restricted pax" — a ustar header for every entry, preceded by a
///   PAX extended header (type `x`) only where ustar cannot hold a field: non-ASCII or too long
///   path/link name (ustar's 155+100 prefix/name split is used when the path is ASCII and fits),
///   uid/gid above 2097151, mtime outside 0..<2^31-1, sizes above 8 GiB, xattrs. The extended
///   header is named `<dir>/PaxHeader/<name>` shortened by libarchive to fit the ustar name field
///   (derived from the path only: no PID, no time) and carries the entry's mtime, uid and gid;
///   its records are only those listed here (no atime/ctime/SCHILY.dev/ino). No global (`g`)
///   headers. Names are UTF-8. Directory names carry a trailing `/`.
/// - mtime = min(entry.mtime, SOURCE_DATE_EPOCH), whole seconds; no atime, ctime or birthtime.
/// - uid/gid numeric from the entry; uname and gname empty.
/// - mode = the entry's permission bits (`0o7777`, setuid/setgid/sticky kept) plus the type.
/// - xattrs: one `SCHILY.xattr.<name>` PAX record per attribute, sorted by name as bytes
///   (no `LIBARCHIVE.xattr.*` records).
/// - Devices carry major/minor; FIFOs and directories have size 0.
/// - Regular file contents come from `.bytes` or are streamed from `.file(path:size:)`; if the
///   file's size differs from `size` the write fails (`LayerError.sourceSizeChanged`).
/// - The archive ends with two 512-byte zero blocks and is not padded to a record size.
///
/// Compression (`LayerCompression`, default gzip level 6; see `ChunkedCompressor`)
/// - The tar is cut every 1 MiB; each chunk is one gzip member (RFC 1952, libdeflate: header
///   `1f 8b 08 00 00000000 XFL ff` — no FNAME/FEXTRA/FCOMMENT, MTIME 0, OS 255) or one zstd frame
///   (content size, no checksum, no dictionary id), concatenated in order; no padding after them.
///   The bytes do not depend on the number of threads.
/// - diff_id = sha256 of the tar bytes, digest = sha256 of the blob bytes, both hashed as
///   they are produced.
/// - Media types `application/vnd.oci.image.layer.v1.tar+gzip`, `…tar+zstd`, `…tar`.
internal import CArchive
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A layer blob written to a temporary file, with its digests.
public struct WrittenLayer: Sendable, Hashable {
    /// sha256 of the uncompressed tar.
    public var diffID: Digest
    /// sha256 of the blob as written (equal to `diffID` for an uncompressed tar).
    public var digest: Digest
    public var compressedSize: Int64
    public var uncompressedSize: Int64
    /// A temporary file inside the requested directory; the caller moves or removes it.
    public var blobPath: String
    public var mediaType: String
}

/// Writes layers in "Layer format 1" (see the comment at the top of this file).
public struct LayerWriter: Sendable {
    public static let gzipMediaType = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let tarMediaType = "application/vnd.oci.image.layer.v1.tar"
    /// Longest accepted entry path or link target, in bytes.
    public static let maxPathBytes = 4096

    public var sourceDateEpoch: Int64
    public var compression: LayerCompression
    /// Threads that compress; the blob's bytes do not depend on it.
    public var workers: Int
    /// Sees every byte of the tar as it is written (for the secret scan); it does not change them.
    public var tarObserver: (@Sendable (UnsafeRawBufferPointer) -> Void)?

    public init(
        sourceDateEpoch: Int64, compression: LayerCompression = .default,
        workers: Int = ProcessInfo.processInfo.activeProcessorCount,
        tarObserver: (@Sendable (UnsafeRawBufferPointer) -> Void)? = nil
    ) {
        self.sourceDateEpoch = sourceDateEpoch
        self.compression = compression
        self.workers = max(1, workers)
        self.tarObserver = tarObserver
    }

    /// Writes `entries` as a layer compressed with `compression` into a new temporary file in
    /// `directory`. On error no file is left behind.
    public func write(_ entries: [LayerEntry], into directory: String) throws -> WrittenLayer {
        if compression == .uncompressed { return try writeUncompressedTar(entries, into: directory) }
        let plan = try LayerPlan(entries)
        let locale = UTF8ThreadLocale()
        defer { withExtendedLifetime(locale) {} }
        let output = try TemporaryBlob(in: directory)
        do {
            let tarHasher = SHA256Hasher()
            let observer = tarObserver
            let (compressor, blobHasher) = try compressing(into: output) { buffer in
                tarHasher.update(buffer)
                observer?(buffer)
            }
            try writeTar(plan, subject: output.path) { buffer in try compressor.write(buffer) }
            try compressor.finish()
            try output.finish()
            return WrittenLayer(
                diffID: tarHasher.finalize(), digest: blobHasher.finalize(),
                compressedSize: Int64(blobHasher.byteCount), uncompressedSize: Int64(tarHasher.byteCount),
                blobPath: output.path, mediaType: compression.mediaType)
        } catch {
            output.discard()
            throw error
        }
    }

    /// Compresses the layer tar at `path`, whose sha256 must be `diffID` (checked as it streams), with
    /// `compression` into a new temporary file in `directory`. On error no file is left behind.
    public func compressTar(at path: String, diffID: Digest, into directory: String) throws -> WrittenLayer {
        let output = try TemporaryBlob(in: directory)
        do {
            let tarHasher = SHA256Hasher()
            let (compressor, blobHasher) = try compressing(into: output) { tarHasher.update($0) }
            let input = open(path, O_RDONLY | O_CLOEXEC)
            guard input >= 0 else { throw SystemError("open", path: path, errno: errno) }
            defer { close(input) }
            // Read straight into the compressor's chunk buffers: no copy on the way.
            while try compressor.fill({ free in
                while true {
                    let count = read(input, free.baseAddress, free.count)
                    if count >= 0 { return count }
                    if errno != EINTR { throw SystemError("read", path: path, errno: errno) }
                }
            }) {}
            try compressor.finish()
            try output.finish()
            let actual = tarHasher.finalize()
            guard actual == diffID else {
                throw LayerError.diffIDMismatch(layer: path, expected: diffID, actual: actual)
            }
            return WrittenLayer(
                diffID: diffID, digest: blobHasher.finalize(), compressedSize: Int64(blobHasher.byteCount),
                uncompressedSize: Int64(tarHasher.byteCount), blobPath: output.path, mediaType: compression.mediaType)
        } catch {
            output.discard()
            throw error
        }
    }

    /// A compressor whose blob goes to `output`, hashed as it is written; `observeTar` sees the tar. Both
    /// run on the compressor's threads, beside the compression.
    private func compressing(
        into output: TemporaryBlob, observeTar: @escaping (UnsafeRawBufferPointer) -> Void
    ) throws -> (ChunkedCompressor, SHA256Hasher) {
        let blobHasher = SHA256Hasher()
        let compressor = try ChunkedCompressor(compression, workers: workers, observeInput: observeTar) { buffer in
            blobHasher.update(buffer)
            try output.write(buffer)
        }
        return (compressor, blobHasher)
    }

    /// Writes `entries` as an uncompressed tar (same tar bytes as `write`) into a new temporary
    /// file in `directory`; `digest == diffID`.
    public func writeUncompressedTar(_ entries: [LayerEntry], into directory: String) throws -> WrittenLayer {
        let plan = try LayerPlan(entries)
        let locale = UTF8ThreadLocale()
        defer { withExtendedLifetime(locale) {} }
        let output = try TemporaryBlob(in: directory)
        do {
            let hasher = SHA256Hasher()
            try writeTar(plan, subject: output.path) { buffer in
                hasher.update(buffer)
                tarObserver?(buffer)
                try output.write(buffer)
            }
            try output.finish()
            let digest = hasher.finalize()
            let size = Int64(hasher.byteCount)
            return WrittenLayer(
                diffID: digest, digest: digest, compressedSize: size, uncompressedSize: size,
                blobPath: output.path, mediaType: Self.tarMediaType)
        } catch {
            output.discard()
            throw error
        }
    }

    private func writeTar(
        _ plan: LayerPlan, subject: String, consume: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let tar = try ArchiveWriter(subject: subject)
        try tar.check(archive_write_set_format_pax_restricted(tar.handle), "archive_write_set_format_pax_restricted")
        try tar.check(
            archive_write_set_format_option(tar.handle, "pax", "xattrheader", "SCHILY"),
            "archive_write_set_format_option(xattrheader=SCHILY)")
        try tar.check(archive_write_add_filter_none(tar.handle), "archive_write_add_filter_none")
        try tar.check(archive_write_set_bytes_in_last_block(tar.handle, 1), "archive_write_set_bytes_in_last_block")
        try tar.open(consume: consume)
        let entry = try ArchiveEntryHandle()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        for item in plan.entries {
            archive_entry_clear(entry.handle)
            try fill(entry.handle, from: item)
            try tar.check(archive_write_header(tar.handle, entry.handle), "archive_write_header \(item.path)")
            if case .regular(let source) = item.kind {
                try writeContents(source, of: item.path, to: tar, buffer: buffer)
            }
            try tar.check(archive_write_finish_entry(tar.handle), "archive_write_finish_entry \(item.path)")
        }
        try tar.check(archive_write_close(tar.handle), "archive_write_close")
    }

    private func fill(_ entry: OpaquePointer, from item: LayerEntry) throws {
        archive_entry_copy_pathname(entry, item.path)
        archive_entry_set_perm(entry, mode_t(item.mode & 0o7777))
        archive_entry_set_uid(entry, Int64(item.uid))
        archive_entry_set_gid(entry, Int64(item.gid))
        archive_entry_set_mtime(entry, time_t(min(item.mtime, sourceDateEpoch)), 0)
        switch item.kind {
        case .directory:
            archive_entry_set_filetype(entry, FileTypeBits.directory)
            archive_entry_set_size(entry, 0)
        case .regular(let source):
            archive_entry_set_filetype(entry, FileTypeBits.regular)
            archive_entry_set_size(entry, source.size)
        case .symlink(let target):
            archive_entry_set_filetype(entry, FileTypeBits.symlink)
            archive_entry_copy_symlink(entry, target)
            archive_entry_set_size(entry, 0)
        case .hardlink(let target):
            archive_entry_set_filetype(entry, FileTypeBits.regular)
            archive_entry_copy_hardlink(entry, target)
            archive_entry_set_size(entry, 0)
        case .characterDevice(let major, let minor):
            archive_entry_set_filetype(entry, FileTypeBits.characterDevice)
            archive_entry_set_rdevmajor(entry, dev_t(major))
            archive_entry_set_rdevminor(entry, dev_t(minor))
            archive_entry_set_size(entry, 0)
        case .blockDevice(let major, let minor):
            archive_entry_set_filetype(entry, FileTypeBits.blockDevice)
            archive_entry_set_rdevmajor(entry, dev_t(major))
            archive_entry_set_rdevminor(entry, dev_t(minor))
            archive_entry_set_size(entry, 0)
        case .fifo:
            archive_entry_set_filetype(entry, FileTypeBits.fifo)
            archive_entry_set_size(entry, 0)
        }
        // libarchive 3.6 prepends each added xattr and writes the list head first: add them in
        // descending order so the PAX records come out ascending.
        let names = item.xattrs.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        for name in names.reversed() {
            let value = item.xattrs[name] ?? []
            value.withUnsafeBytes { bytes in
                archive_entry_xattr_add_entry(entry, name, bytes.baseAddress, bytes.count)
            }
        }
    }

    private func writeContents(
        _ source: ContentSource, of path: String, to tar: ArchiveWriter, buffer: UnsafeMutableRawBufferPointer
    ) throws {
        switch source {
        case .bytes(let bytes):
            try bytes.withUnsafeBytes { try tar.writeData($0) }
        case .file(let sourcePath, let size):
            // O_NONBLOCK: a source swapped for a FIFO since it was planned must not block the open; the
            // regular-file check below then refuses it (regular files ignore the flag).
            let fd = open(sourcePath, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            if fd < 0 { throw SystemError("open", path: sourcePath, errno: errno) }
            defer { close(fd) }
            var status = stat()
            if fstat(fd, &status) != 0 { throw SystemError("fstat", path: sourcePath, errno: errno) }
            guard (status.st_mode & S_IFMT) == S_IFREG else {
                throw LayerError.invalidEntry(path: path, reason: "source \(sourcePath) is not a regular file")
            }
            if Int64(status.st_size) != size {
                throw LayerError.sourceSizeChanged(
                    path: path, source: sourcePath, expected: size, actual: Int64(status.st_size))
            }
            var total: Int64 = 0
            while true {
                let count = read(fd, buffer.baseAddress, buffer.count)
                if count < 0 {
                    if errno == EINTR { continue }
                    throw SystemError("read", path: sourcePath, errno: errno)
                }
                if count == 0 { break }
                total += Int64(count)
                if total > size {
                    throw LayerError.sourceSizeChanged(path: path, source: sourcePath, expected: size, actual: total)
                }
                try tar.writeData(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            }
            if total != size {
                throw LayerError.sourceSizeChanged(path: path, source: sourcePath, expected: size, actual: total)
            }
        }
    }
}

/// The validated, sorted, hardlink-normalized entry list of one layer.
struct LayerPlan {
    var entries: [LayerEntry]

    init(_ input: [LayerEntry]) throws(LayerError) {
        var keyed: [(key: [[UInt8]], entry: LayerEntry)] = []
        keyed.reserveCapacity(input.count)
        for entry in input {
            keyed.append((try Self.validatedComponents(entry.path, what: "path", of: entry.path), entry))
            if case .symlink(let target) = entry.kind {
                let bytes = Array(target.utf8)
                if bytes.isEmpty || bytes.contains(0) || bytes.count > LayerWriter.maxPathBytes {
                    throw .invalidEntry(
                        path: entry.path, reason: "symlink target is empty, contains NUL or is over 4096 bytes")
                }
            }
        }
        keyed.sort { componentwiseLess($0.key, $1.key) }
        var index: [String: Int] = [:]
        for (position, item) in keyed.enumerated() {
            if index.updateValue(position, forKey: item.entry.path) != nil {
                throw .invalidEntry(path: item.entry.path, reason: "duplicate path")
            }
        }
        for item in keyed where item.key.count > 1 {
            let parent = String(decoding: joinedPath(item.key.dropLast()), as: UTF8.self)
            if let parentIndex = index[parent], keyed[parentIndex].entry.kind != .directory {
                throw .invalidEntry(path: item.entry.path, reason: "parent \(parent) is not a directory in this layer")
            }
        }
        var entries = keyed.map(\.entry)
        try Self.rerootHardlinks(&entries, index: index)
        self.entries = entries
    }

    static func validatedComponents(_ path: String, what: String, of entryPath: String) throws(LayerError)
        -> [[UInt8]]
    {
        let bytes = Array(path.utf8)
        func fail(_ reason: String) -> LayerError { .invalidEntry(path: entryPath, reason: "\(what) \(reason)") }
        if bytes.isEmpty { throw fail("is empty") }
        if bytes.count > LayerWriter.maxPathBytes { throw fail("is longer than \(LayerWriter.maxPathBytes) bytes") }
        if bytes.contains(0) { throw fail("contains a NUL byte") }
        if bytes.first == UInt8(ascii: "/") { throw fail("is absolute") }
        let components = bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map(Array.init)
        for component in components {
            if component.isEmpty { throw fail("has an empty component or trailing '/'") }
            if component == [UInt8(ascii: ".")] { throw fail("has a '.' component") }
            if component == [UInt8(ascii: "."), UInt8(ascii: ".")] { throw fail("has a '..' component") }
            // A whiteout of nothing, of its own directory or of its parent: every applier refuses the layer.
            if component == Array(".wh.".utf8) || component == Array(".wh..".utf8) || component == Array(".wh...".utf8)
            {
                throw fail("has an invalid whiteout name \(String(decoding: component, as: UTF8.self))")
            }
        }
        return components
    }

    /// Makes the member of each same-layer hardlink group that sorts first carry the contents.
    private static func rerootHardlinks(_ entries: inout [LayerEntry], index: [String: Int]) throws(LayerError) {
        var groups: [Int: [Int]] = [:]  // content-carrying entry -> hardlinks resolving to it
        for position in entries.indices {
            guard case .hardlink(let target) = entries[position].kind else { continue }
            _ = try validatedComponents(target, what: "hardlink target", of: entries[position].path)
            var current = target
            var steps = 0
            while let targetIndex = index[current] {
                switch entries[targetIndex].kind {
                case .regular:
                    groups[targetIndex, default: []].append(position)
                case .hardlink(let next):
                    steps += 1
                    if steps > entries.count {
                        throw .invalidEntry(path: entries[position].path, reason: "hardlink cycle")
                    }
                    current = next
                    continue
                default:
                    throw .invalidEntry(
                        path: entries[position].path, reason: "hardlink target \(current) is not a regular file")
                }
                break
            }
        }
        for (carrier, links) in groups {
            let first = ([carrier] + links).min() ?? carrier  // sorted order == index order
            let content = entries[carrier]
            let canonicalPath = entries[first].path
            for member in [carrier] + links where member != first {
                var link = content
                link.path = entries[member].path
                link.kind = .hardlink(target: canonicalPath)
                link.xattrs = [:]
                entries[member] = link
            }
            if first != carrier {
                var moved = content
                moved.path = canonicalPath
                entries[first] = moved
            }
        }
    }
}

/// A file created with a random name in a directory, removed unless `finish` succeeds.
final class TemporaryBlob {
    let path: String
    private var fd: Int32

    init(in directory: String) throws {
        var template = Array((directory + "/.tmp-XXXXXXXXXX").utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { buffer -> Int32 in
            guard let base = buffer.baseAddress else { return -1 }
            return mkstemp(base)
        }
        if descriptor < 0 { throw SystemError("mkstemp", path: directory, errno: errno) }
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        fd = descriptor
        path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit { if fd >= 0 { close(fd) } }

    func write(_ buffer: UnsafeRawBufferPointer) throws {
        guard var base = buffer.baseAddress else { return }
        var remaining = buffer.count
        while remaining > 0 {
            let written = Glibc.write(fd, base, remaining)
            if written < 0 {
                if errno == EINTR { continue }
                throw SystemError("write", path: path, errno: errno)
            }
            remaining -= written
            base += written
        }
    }

    func finish() throws {
        let status = close(fd)
        fd = -1
        if status != 0 { throw SystemError("close", path: path, errno: errno) }
    }

    func discard() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        unlink(path)
    }
}
