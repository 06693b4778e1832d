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
        var listing = ArchiveListing(archive: path)
        do {
            while let handle = try reader.nextHeader() {
                try add(ReadHeader(handle), from: reader, stagingDirectory: stagingDirectory, to: &listing)
            }
            try listing.checkNonDirectoriesHaveNoChildren()
        } catch {
            // Files staged before the failure are returned to no one, so nothing else would remove them.
            for file in listing.staged { unlink(file) }
            throw error
        }
        listing.addMissingParents()
        return listing.entries
    }

    /// One header of the archive, checked against the limits and the archive root; a later entry of the same
    /// path replaces the earlier one. Sockets and unknown types are skipped.
    private func add(
        _ header: ReadHeader, from reader: ArchiveReader, stagingDirectory: String, to listing: inout ArchiveListing
    ) throws {
        listing.count += 1
        if listing.count > limits.maxEntries {
            throw LayerError.limitExceeded(layer: listing.archive, limit: "more than \(limits.maxEntries) entries")
        }
        if header.pathname.count > limits.maxPathBytes {
            throw LayerError.limitExceeded(
                layer: listing.archive, limit: "path longer than \(limits.maxPathBytes) bytes")
        }
        guard let components = normalizedArchivePath(header.pathname) else {
            throw listing.refuse(header.pathname, "'..' leaves the archive root")
        }
        if components.isEmpty { return }
        guard let entryPath = String(validating: joinedPath(components), as: UTF8.self) else {
            throw listing.refuse(header.pathname, "name is not valid UTF-8")
        }
        guard let kind = try kind(of: header, from: reader, stagingDirectory: stagingDirectory, in: &listing) else {
            return
        }
        guard header.uid >= 0, header.uid <= Int64(UInt32.max), header.gid >= 0, header.gid <= Int64(UInt32.max)
        else { throw listing.refuse(header.pathname, "uid/gid out of range") }
        var xattrs: [String: [UInt8]] = [:]
        for (name, value) in header.xattrs { xattrs[name] = value }
        listing.set(
            LayerEntry(
                path: entryPath, kind: kind, mode: header.mode, uid: UInt32(header.uid), gid: UInt32(header.gid),
                mtime: header.mtime, xattrs: xattrs))
    }

    /// What an entry is; a hardlink must name an earlier regular file, a regular file's contents are staged.
    /// Nil for what a layer cannot hold (sockets, unknown types).
    private func kind(
        of header: ReadHeader, from reader: ArchiveReader, stagingDirectory: String, in listing: inout ArchiveListing
    ) throws -> LayerEntry.Kind? {
        if let link = header.hardlink, !link.isEmpty {
            guard let target = normalizedArchivePath(link), !target.isEmpty,
                let targetPath = String(validating: joinedPath(target), as: UTF8.self)
            else { throw listing.refuse(header.pathname, "hardlink target leaves the archive root") }
            guard let index = listing.indexByPath[targetPath], case .regular = listing.entries[index].kind else {
                throw listing.refuse(header.pathname, "hardlink target \(targetPath) is not an earlier regular file")
            }
            return .hardlink(target: targetPath)
        }
        switch header.type {
        case .directory: return .directory
        case .regular:
            return try stageContents(of: header, from: reader, stagingDirectory: stagingDirectory, in: &listing)
        case .symlink:
            guard let target = header.symlink, !target.isEmpty, target.count <= limits.maxPathBytes,
                let text = String(validating: target, as: UTF8.self)
            else { throw listing.refuse(header.pathname, "symlink target empty, too long or not UTF-8") }
            return .symlink(target: text)
        case .characterDevice: return .characterDevice(major: header.rdevMajor, minor: header.rdevMinor)
        case .blockDevice: return .blockDevice(major: header.rdevMajor, minor: header.rdevMinor)
        case .fifo: return .fifo
        case .socket, .unknown: return nil
        }
    }

    /// A regular file's data, copied into a new file of the staging directory, within the declared size and
    /// the archive's total.
    private func stageContents(
        of header: ReadHeader, from reader: ArchiveReader, stagingDirectory: String, in listing: inout ArchiveListing
    ) throws -> LayerEntry.Kind {
        if header.size < 0 || header.size > limits.maxTotalBytes - listing.contentBytes {
            throw LayerError.limitExceeded(
                layer: listing.archive, limit: "entry sizes over \(limits.maxTotalBytes) bytes")
        }
        listing.contentBytes += header.size
        let blob = try TemporaryBlob(in: stagingDirectory)
        listing.staged.append(blob.path)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var written: Int64 = 0
        while true {
            let got = try reader.readData(into: buffer)
            if got == 0 { break }
            written += Int64(got)
            if written > header.size { throw listing.refuse(header.pathname, "data beyond the declared size") }
            try blob.write(UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
        }
        try blob.finish()
        return .regular(.file(path: blob.path, size: written))
    }
}

/// The entries of one archive as it is read, by path, and the staged files that hold their contents.
private struct ArchiveListing {
    /// The archive's path, for errors.
    let archive: String
    var entries: [LayerEntry] = []
    var indexByPath: [String: Int] = [:]
    /// Headers read so far, skipped ones included.
    var count = 0
    var contentBytes: Int64 = 0
    var staged: [String] = []

    func refuse(_ raw: [UInt8], _ reason: String) -> LayerError {
        .hostileEntry(layer: archive, path: displayable(bytes: raw), reason: reason)
    }

    /// Adds an entry, or replaces the earlier one of its path in place, as extracting would.
    mutating func set(_ entry: LayerEntry) {
        if let index = indexByPath[entry.path] {
            entries[index] = entry
        } else {
            indexByPath[entry.path] = entries.count
            entries.append(entry)
        }
    }

    /// A non-directory with entries below it (in either order). Sorted component by component, an entry's
    /// descendants follow it at once, so one look at the next entry is enough (checking every ancestor of every
    /// entry is quadratic in depth, a hang for a hostile archive).
    func checkNonDirectoriesHaveNoChildren() throws {
        let keys = entries.map { entry in entry.path.split(separator: "/").map { Array($0.utf8) } }
        let order = entries.indices.sorted { componentwiseLess(keys[$0], keys[$1]) }
        for (position, index) in order.enumerated() where entries[index].kind != .directory {
            guard position + 1 < order.count else { break }
            let next = entries[order[position + 1]].path
            if next.hasPrefix(entries[index].path + "/") {
                throw refuse(Array(next.utf8), "parent \(entries[index].path) is not a directory in the archive")
            }
        }
    }

    /// Parents the archive did not list: walking up from each entry only until a parent that is known.
    mutating func addMissingParents() {
        for entryIndex in entries.indices {
            var missing: [String] = []
            var path = entries[entryIndex].path
            while let slash = path.lastIndex(of: "/") {
                path = String(path[..<slash])
                if indexByPath[path] != nil { break }
                missing.append(path)
                indexByPath[path] = -1
            }
            for parent in missing.reversed() {
                indexByPath[parent] = entries.count
                entries.append(LayerEntry(path: parent, kind: .directory, mode: 0o755))
            }
        }
    }
}
