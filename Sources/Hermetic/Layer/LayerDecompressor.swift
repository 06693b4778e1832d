internal import CArchive

#if canImport(Glibc)
    import Glibc
#endif

/// Turns a layer blob back into its tar: for `force-compression=true`, which recompresses a base image's
/// layer whose compression differs from the one asked for (SPEC §3, Compression).
///
/// In: a blob, its media type and the diff_id its image's config gives. Out: the tar in a new temporary
/// file, whose sha256 was checked against that diff_id while it was written. The blob is hostile: its
/// compression must match its media type and the tar may not grow past `LayerLimits.maxTotalBytes`.
struct LayerDecompressor {
    var limits: LayerLimits = .standard

    /// A tar written by `decompress`: a temporary file, the caller's to move or remove.
    struct Tar {
        var path: String
        var size: Int64
    }

    /// The decompressed tar of the blob at `path`, in a new temporary file in `directory`. `name` is how
    /// errors name the layer. On error no file is left behind.
    func decompress(
        blobAt path: String, mediaType: String, expectedDiffID: Digest, into directory: String, name: String
    ) throws -> Tar {
        guard let compression = LayerApplier.compression(of: mediaType) else {
            throw LayerError.unsupportedMediaType(layer: name, mediaType: mediaType)
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError("open", path: path, errno: errno) }
        defer { close(fd) }
        let reader = try ArchiveReader(subject: "layer " + name)
        archive_read_support_format_raw(reader.handle)
        let expectedFilter: Int32
        switch compression {
        case .none: expectedFilter = ARCHIVE_FILTER_NONE
        case .gzip:
            archive_read_support_filter_gzip(reader.handle)
            expectedFilter = ARCHIVE_FILTER_GZIP
        case .zstd:
            archive_read_support_filter_zstd(reader.handle)
            expectedFilter = ARCHIVE_FILTER_ZSTD
        }
        try reader.open(fileDescriptor: fd)
        guard try reader.nextHeader() != nil else {
            throw LayerError.archive(subject: "layer " + name, operation: "read", message: "empty layer blob")
        }
        guard archive_filter_code(reader.handle, 0) == expectedFilter else {
            throw LayerError.archive(
                subject: "layer " + name, operation: "read",
                message: "blob compression does not match media type \(mediaType)")
        }
        let output = try TemporaryBlob(in: directory)
        do {
            let hasher = SHA256Hasher()
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
            defer { buffer.deallocate() }
            while true {
                let count = try reader.readData(into: buffer)
                if count == 0 { break }
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
                hasher.update(bytes)
                if Int64(hasher.byteCount) > limits.maxTotalBytes {
                    throw LayerError.limitExceeded(
                        layer: name, limit: "more than \(limits.maxTotalBytes) decompressed bytes")
                }
                try output.write(bytes)
            }
            try output.finish()
            let diffID = hasher.finalize()
            guard diffID == expectedDiffID else {
                throw LayerError.diffIDMismatch(layer: name, expected: expectedDiffID, actual: diffID)
            }
            return Tar(path: output.path, size: Int64(hasher.byteCount))
        } catch {
            output.discard()
            throw error
        }
    }
}
