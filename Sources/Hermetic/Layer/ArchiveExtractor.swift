internal import CArchive

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Reads local archives for `ADD archive.tar[.gz|.bz2|.xz|.zst] /dest`.
///
/// BuildKit rule: ADD extracts a local source when it is a tar archive, uncompressed or
/// compressed with gzip, bzip2, xz or zstd, whose first header is valid; anything else
/// (including an empty tar) is copied as a file.
///
/// Entries come back with paths relative to the archive root, normalized as in `LayerEntry`
/// (same rules as `LayerApplier`: `..` leaving the root, parents that are symlinks or files,
/// over-long paths are refused). Later duplicates replace earlier ones, as when extracting.
/// Missing parent directories are added (mode 0755, owner 0:0, mtime 0). Hardlink targets are
/// archive-relative too and must name an earlier regular file of the archive. Regular file
/// contents are staged as new files in `stagingDirectory`.
public struct ArchiveExtractor: Sendable {
    public var limits: LayerLimits

    public init(limits: LayerLimits = .standard) {
        self.limits = limits
    }

    private func makeReader(for path: String, fd: Int32) throws -> ArchiveReader {
        let reader = try ArchiveReader(subject: path)
        archive_read_support_format_tar(reader.handle)
        archive_read_support_filter_gzip(reader.handle)
        archive_read_support_filter_bzip2(reader.handle)
        archive_read_support_filter_xz(reader.handle)
        archive_read_support_filter_zstd(reader.handle)
        try reader.open(fileDescriptor: fd)
        return reader
    }

    /// True when `path` is a (possibly compressed) tar archive ADD should extract.
    public func isRecognizedArchive(at path: String) -> Bool {
        let locale = UTF8ThreadLocale()
        defer { withExtendedLifetime(locale) {} }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return false }
        defer { close(fd) }
        guard let reader = try? makeReader(for: path, fd: fd) else { return false }
        return (try? reader.nextHeader()) != nil
    }

    public func entries(ofArchiveAt path: String, stagingDirectory: String) throws -> [LayerEntry] {
        let locale = UTF8ThreadLocale()
        defer { withExtendedLifetime(locale) {} }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError("open", path: path, errno: errno) }
        defer { close(fd) }
        let reader = try makeReader(for: path, fd: fd)
        var result: [LayerEntry] = []
        var indexByPath: [String: Int] = [:]
        var count = 0
        var contentBytes: Int64 = 0
        var staged: [String] = []
        func refuse(_ raw: [UInt8], _ reason: String) -> LayerError {
            .hostileEntry(layer: path, path: displayable(bytes: raw), reason: reason)
        }
        do {
            while let handle = try reader.nextHeader() {
                count += 1
                if count > limits.maxEntries {
                    throw LayerError.limitExceeded(layer: path, limit: "more than \(limits.maxEntries) entries")
                }
                let header = ReadHeader(handle)
                if header.pathname.count > limits.maxPathBytes {
                    throw LayerError.limitExceeded(layer: path, limit: "path longer than \(limits.maxPathBytes) bytes")
                }
                guard let components = normalizedArchivePath(header.pathname) else {
                    throw refuse(header.pathname, "'..' leaves the archive root")
                }
                if components.isEmpty { continue }
                guard let entryPath = String(validating: joinedPath(components), as: UTF8.self) else {
                    throw refuse(header.pathname, "name is not valid UTF-8")
                }
                let kind: LayerEntry.Kind
                if let link = header.hardlink, !link.isEmpty {
                    guard let target = normalizedArchivePath(link), !target.isEmpty,
                        let targetPath = String(validating: joinedPath(target), as: UTF8.self)
                    else { throw refuse(header.pathname, "hardlink target leaves the archive root") }
                    guard let index = indexByPath[targetPath], case .regular = result[index].kind else {
                        throw refuse(header.pathname, "hardlink target \(targetPath) is not an earlier regular file")
                    }
                    kind = .hardlink(target: targetPath)
                } else {
                    switch header.type {
                    case .directory: kind = .directory
                    case .regular:
                        if header.size < 0 || header.size > limits.maxTotalBytes - contentBytes {
                            throw LayerError.limitExceeded(
                                layer: path, limit: "entry sizes over \(limits.maxTotalBytes) bytes")
                        }
                        contentBytes += header.size
                        let blob = try TemporaryBlob(in: stagingDirectory)
                        staged.append(blob.path)
                        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
                        defer { buffer.deallocate() }
                        var written: Int64 = 0
                        while true {
                            let got = try reader.readData(into: buffer)
                            if got == 0 { break }
                            written += Int64(got)
                            if written > header.size { throw refuse(header.pathname, "data beyond the declared size") }
                            try blob.write(UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
                        }
                        try blob.finish()
                        kind = .regular(.file(path: blob.path, size: written))
                    case .symlink:
                        guard let target = header.symlink, !target.isEmpty, target.count <= limits.maxPathBytes,
                            let text = String(validating: target, as: UTF8.self)
                        else { throw refuse(header.pathname, "symlink target empty, too long or not UTF-8") }
                        kind = .symlink(target: text)
                    case .characterDevice: kind = .characterDevice(major: header.rdevMajor, minor: header.rdevMinor)
                    case .blockDevice: kind = .blockDevice(major: header.rdevMajor, minor: header.rdevMinor)
                    case .fifo: kind = .fifo
                    case .socket, .unknown: continue
                    }
                }
                guard header.uid >= 0, header.uid <= Int64(UInt32.max), header.gid >= 0, header.gid <= Int64(UInt32.max)
                else { throw refuse(header.pathname, "uid/gid out of range") }
                var xattrs: [String: [UInt8]] = [:]
                for (name, value) in header.xattrs { xattrs[name] = value }
                let entry = LayerEntry(
                    path: entryPath, kind: kind, mode: header.mode, uid: UInt32(header.uid), gid: UInt32(header.gid),
                    mtime: header.mtime, xattrs: xattrs)
                if let index = indexByPath[entryPath] {
                    result[index] = entry
                } else {
                    indexByPath[entryPath] = result.count
                    result.append(entry)
                }
            }
            // A non-directory with entries below it (in either order). Sorted component by component, an
            // entry's descendants follow it at once, so one look at the next entry is enough (checking every
            // ancestor of every entry is quadratic in depth, a hang for a hostile archive).
            let keys = result.map { entry in entry.path.split(separator: "/").map { Array($0.utf8) } }
            let order = result.indices.sorted { componentwiseLess(keys[$0], keys[$1]) }
            for (position, index) in order.enumerated() where result[index].kind != .directory {
                guard position + 1 < order.count else { break }
                let next = result[order[position + 1]].path
                if next.hasPrefix(result[index].path + "/") {
                    throw refuse(Array(next.utf8), "parent \(result[index].path) is not a directory in the archive")
                }
            }
        } catch {
            for file in staged { unlink(file) }
            throw error
        }
        // Parents the archive did not list: walking up from each entry only until a parent that is known.
        for entryIndex in result.indices {
            var missing: [String] = []
            var path = result[entryIndex].path
            while let slash = path.lastIndex(of: "/") {
                path = String(path[..<slash])
                if indexByPath[path] != nil { break }
                missing.append(path)
                indexByPath[path] = -1
            }
            for parent in missing.reversed() {
                indexByPath[parent] = result.count
                result.append(LayerEntry(path: parent, kind: .directory, mode: 0o755))
            }
        }
        return result
    }
}
