internal import CArchive

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// What applying one layer did besides changing the tree.
public struct AppliedLayer: Sendable, Hashable {
    /// sha256 of the decompressed tar stream, including any bytes after the end-of-archive blocks.
    public var diffID: Digest
    public var entryCount: Int
    /// Entries skipped on purpose (device nodes, sockets, unknown whiteouts, unsettable xattrs).
    public var warnings: [String]
}

/// Unpacks OCI/Docker layer blobs onto a root directory, treating each layer as hostile.
///
/// Rules:
/// - Media types: `application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]` (and the
///   `nondistributable` variants), `application/vnd.docker.image.rootfs.diff.tar[.gzip]` and
///   `application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`. The blob's compression must
///   match the media type.
/// - The diff_id is the sha256 of the whole decompressed stream, hashed while it is read, and
///   checked against `expectedDiffID` at the end; on a mismatch the partially applied root is the
///   caller's to discard.
/// - Paths: leading `/` and `./` stripped, `.` and empty components dropped, `..` resolved
///   lexically; a `..` that would leave the root is refused. The root entry itself (`./`) is
///   skipped: the caller owns the root's metadata.
/// - Nothing is resolved through a symlink: a parent component that is a symlink or not a
///   directory makes the entry refused; final components are replaced, never followed.
///   Missing parents are created with mode 0755 and mtime 0.
/// - An existing entry at a path is replaced, except a directory by a directory (merged).
/// - Hardlinks must point (lexically, inside the root) at an existing regular file.
/// - Character/block devices and sockets are skipped with a warning (the runtime provides
///   `/dev`); FIFOs are created.
/// - Whiteouts (OCI): `.wh.<name>` removes `<name>` unless this layer itself created it;
///   `.wh..wh..opq` removes everything in its directory that this layer has not created; both
///   give the same result wherever they appear in the tar. Other `.wh..wh.*` names are skipped.
///   `.wh.`, `.wh..` and `.wh...` (a whiteout of nothing, of its own directory, of its parent)
///   make the layer refused, naming the entry, as containerd refuses them; nothing is removed.
/// - Owner (when `preserveOwnership`), permission bits including setuid/setgid/sticky, xattrs
///   and mtime (atime = mtime) are applied exactly, with file descriptors or
///   `AT_SYMLINK_NOFOLLOW`, after the content; directories get theirs after the whole layer.
///   Directories whose contents changed but that the layer does not list keep their times.
///   The process umask has no effect.
/// - Limits (`LayerLimits`): entry count, path length, decompressed bytes, total entry sizes,
///   distinct paths (entries, the directories whiteouts are in, and all their parents: what the
///   applier must remember to keep whiteouts off this layer's own entries, one small node per
///   component).
public struct LayerApplier: Sendable {
    public var limits: LayerLimits
    /// When false (unprivileged tests), owners are left as the current user.
    public var preserveOwnership: Bool

    public init(limits: LayerLimits = .standard, preserveOwnership: Bool = true) {
        self.limits = limits
        self.preserveOwnership = preserveOwnership
    }

    enum Compression { case none, gzip, zstd }

    static func compression(of mediaType: String) -> Compression? {
        switch mediaType {
        case "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            "application/vnd.docker.image.rootfs.diff.tar":
            return Compression.none
        case "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
            return .gzip
        case "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
            return .zstd
        default:
            return nil
        }
    }

    /// Applies the layer and returns the diff_id seen.
    /// Applies the layer and returns the diff_id seen. `name` is how errors name the layer (the layout
    /// and digest it came from, say); by default the blob's path.
    public func apply(
        blobAt path: String, mediaType: String, expectedDiffID: Digest?, toRoot root: String, name: String? = nil
    ) throws -> Digest {
        try applyReporting(
            blobAt: path, mediaType: mediaType, expectedDiffID: expectedDiffID, toRoot: root, name: name
        ).diffID
    }

    public func applyReporting(
        blobAt path: String, mediaType: String, expectedDiffID: Digest?, toRoot root: String, name: String? = nil
    ) throws -> AppliedLayer {
        let layer = name ?? path
        do {
            return try applying(
                blobAt: path, mediaType: mediaType, expectedDiffID: expectedDiffID, toRoot: root, layer: layer)
        } catch let error as SystemError {
            // A failed call names a path (an entry's, or the blob's copy in a workspace); say which layer too.
            throw LayerError.failed(layer: layer, reason: error.description)
        } catch let error as NotRegularFileError {
            throw LayerError.failed(layer: layer, reason: error.description)
        }
    }

    private func applying(
        blobAt path: String, mediaType: String, expectedDiffID: Digest?, toRoot root: String, layer: String
    ) throws -> AppliedLayer {
        guard let compression = Self.compression(of: mediaType) else {
            throw LayerError.unsupportedMediaType(layer: layer, mediaType: mediaType)
        }
        let locale = UTF8ThreadLocale()
        defer { withExtendedLifetime(locale) {} }
        // O_NONBLOCK and the check: a blob path that is a FIFO must not block the open or the read.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 { throw SystemError("open", path: path, errno: errno) }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) != 0 { throw SystemError("fstat", path: path, errno: errno) }
        guard (UInt32(info.st_mode) & FileTypeBits.mask) == FileTypeBits.regular else {
            throw NotRegularFileError(path: path, mode: info.st_mode)
        }

        // Outer reader: decompression only (raw format), so the tar bytes can be hashed.
        let outer = try ArchiveReader(subject: "layer " + layer)
        archive_read_support_format_raw(outer.handle)
        switch compression {
        case .none: break
        case .gzip: archive_read_support_filter_gzip(outer.handle)
        case .zstd: archive_read_support_filter_zstd(outer.handle)
        }
        try outer.open(fileDescriptor: fd)
        guard try outer.nextHeader() != nil else {
            throw LayerError.archive(subject: "layer " + layer, operation: "read", message: "empty layer blob")
        }
        let expectedFilter: Int32 =
            switch compression {
            case .none: ARCHIVE_FILTER_NONE
            case .gzip: ARCHIVE_FILTER_GZIP
            case .zstd: ARCHIVE_FILTER_ZSTD
            }
        if archive_filter_code(outer.handle, 0) != expectedFilter {
            throw LayerError.archive(
                subject: "layer " + layer, operation: "read",
                message: "blob compression does not match media type \(mediaType)")
        }

        let hasher = SHA256Hasher()
        let maxBytes = limits.maxTotalBytes
        let produce: (UnsafeMutableRawBufferPointer) throws -> Int = { buffer in
            let count = try outer.readData(into: buffer)
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            if Int64(hasher.byteCount) > maxBytes {
                throw LayerError.limitExceeded(layer: layer, limit: "more than \(maxBytes) decompressed bytes")
            }
            return count
        }
        let tar = try ArchiveReader(subject: "layer " + layer)
        archive_read_support_format_tar(tar.handle)
        try tar.open(produce: produce)

        let tree = try RootedTree(path: root, layer: layer)
        let application = LayerApplication(
            tree: tree, reader: tar, limits: limits, preserveOwnership: preserveOwnership, layer: layer)
        try application.run()

        // Bytes after the end-of-archive blocks still belong to the diff_id.
        let drain = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { drain.deallocate() }
        while try produce(drain) > 0 {}
        let diffID = hasher.finalize()
        if let expectedDiffID, expectedDiffID != diffID {
            throw LayerError.diffIDMismatch(layer: layer, expected: expectedDiffID, actual: diffID)
        }
        return AppliedLayer(diffID: diffID, entryCount: application.entryCount, warnings: application.warnings)
    }

    /// chown's EINVAL means the id has no mapping in this user namespace (rootless mode): say so.
    static func ownerFailure(_ call: String, path: [UInt8], uid: uid_t, gid: gid_t, errno code: Int32) -> SystemError {
        let note =
            code == EINVAL
            ? " (owner \(uid):\(gid) is not mapped in the builder's user namespace: rootless mode maps the ids "
                + "that /etc/subuid and /etc/subgid give the user)" : ""
        return SystemError(call + note, path: displayable(bytes: path), errno: code)
    }
}

/// The state of one layer being applied.
private final class LayerApplication {
    let tree: RootedTree
    let reader: ArchiveReader
    let limits: LayerLimits
    let preserveOwnership: Bool
    let layer: String
    var entryCount = 0
    var warnings: [String] = []
    /// Paths this layer created or changed, and all their ancestors ("touched": whiteouts and opaque
    /// directories leave them alone).
    var paths: LayerPaths
    /// Directory entries of this layer by node, applied after all contents (names dropped: only the
    /// metadata is needed, and a path per directory would cost what `LayerPaths` saves).
    var directories: [Int: ReadHeader] = [:]
    /// Directories an opaque whiteout already emptied of what this layer did not make: nothing this layer
    /// did not make can appear in them again, so another opaque above or in them need not walk them.
    var cleared: Set<Int> = []
    var contentBytes: Int64 = 0

    init(tree: RootedTree, reader: ArchiveReader, limits: LayerLimits, preserveOwnership: Bool, layer: String) {
        self.tree = tree
        self.reader = reader
        self.limits = limits
        self.preserveOwnership = preserveOwnership
        self.layer = layer
        paths = LayerPaths(limit: limits.maxPaths)
    }

    func run() throws {
        while let entry = try reader.nextHeader() {
            entryCount += 1
            if entryCount > limits.maxEntries {
                throw LayerError.limitExceeded(layer: layer, limit: "more than \(limits.maxEntries) entries")
            }
            let header = ReadHeader(entry)
            try apply(header)
        }
        try finishDirectories()
    }

    func warn(_ path: [UInt8], _ message: String) {
        warnings.append("\(displayable(bytes: path)): \(message)")
    }

    /// Marks `components` and its ancestors as touched; returns their nodes (see `LayerPaths.insert`).
    func touch(_ components: some Collection<[UInt8]>) throws -> [Int] {
        guard let nodes = paths.insert(components) else {
            throw LayerError.limitExceeded(
                layer: layer, limit: "more than \(limits.maxPaths) distinct paths (entries and their parents)")
        }
        return nodes
    }

    func apply(_ header: ReadHeader) throws {
        let raw = header.pathname
        if raw.count > limits.maxPathBytes {
            throw LayerError.limitExceeded(layer: layer, limit: "path longer than \(limits.maxPathBytes) bytes")
        }
        guard let components = normalizedArchivePath(raw) else {
            throw tree.refuse(raw, "'..' leaves the root")
        }
        guard let name = components.last else { return }  // the root itself
        let path = joinedPath(components)
        let parentComponents = components.dropLast()
        let whiteoutPrefix = Array(".wh.".utf8)

        if name.starts(with: whiteoutPrefix) {
            let parentNodes = try touch(parentComponents)
            let parentNode = parentNodes.last ?? LayerPaths.root
            if name == Array(".wh..wh..opq".utf8) {
                guard let directory = try tree.openDirectory(parentComponents, creating: parentNodes, for: path)
                else { return }
                try clearOpaque(directory, node: parentNode, depth: 0)
            } else if name.starts(with: Array(".wh..wh.".utf8)) {
                warn(path, "unsupported whiteout skipped")
            } else {
                let target = Array(name.dropFirst(whiteoutPrefix.count))
                // `.wh.`, `.wh..` and `.wh...` would remove nothing, the directory itself or its parent (the
                // root's parent, for one at the top): refused, as containerd does ("invalid whiteout name").
                if target.isEmpty || target == [UInt8(ascii: ".")] || target == Array("..".utf8) {
                    throw tree.refuse(path, "invalid whiteout name (it names no entry of its directory)")
                }
                guard let directory = try tree.openDirectory(parentComponents, for: path) else { return }
                if let child = paths.child(of: parentNode, named: target) {
                    // This layer made or changed `target` (an entry below it came first): what it made stays,
                    // and what the lower layers had there still goes, as when the whiteout comes first.
                    let fd = openat(directory.fd, target.cString, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    if fd >= 0 { try clearOpaque(DirectoryDescriptor(fd: fd, owned: true), node: child, depth: 0) }
                    return
                }
                if try tree.status(of: target, in: directory) != nil {
                    tree.noteMutation(of: parentNode, descriptor: directory)
                    try tree.remove(target, in: directory)
                }
            }
            return
        }

        let nodes = try touch(components)
        guard let node = nodes.last else { return }
        let parentNode = nodes.dropLast().last ?? LayerPaths.root
        guard let parent = try tree.openDirectory(parentComponents, creating: Array(nodes.dropLast()), for: path)
        else { return }
        let existing = try tree.status(of: name, in: parent)
        let existingIsDirectory =
            existing.map { (UInt32($0.st_mode) & FileTypeBits.mask) == FileTypeBits.directory } ?? false

        if let link = header.hardlink, !link.isEmpty {
            try makeHardlink(name: name, path: path, in: parent, parentNode: parentNode, target: link)
            return
        }
        switch header.type {
        case .directory:
            if !existingIsDirectory {
                tree.noteMutation(of: parentNode, descriptor: parent)
                if existing != nil { try tree.remove(name, in: parent) }
                if mkdirat(parent.fd, name.cString, 0o700) != 0 {
                    throw SystemError("mkdirat", path: displayable(bytes: path), errno: errno)
                }
            }
            var metadata = header
            metadata.pathname = []
            directories[node] = metadata
        case .regular:
            tree.noteMutation(of: parentNode, descriptor: parent)
            if existing != nil { try tree.remove(name, in: parent) }
            try writeRegularFile(name: name, path: path, in: parent, header: header)
        case .symlink:
            let target = header.symlink ?? []
            if target.isEmpty || target.count > limits.maxPathBytes {
                throw tree.refuse(path, "symlink target is empty or longer than \(limits.maxPathBytes) bytes")
            }
            tree.noteMutation(of: parentNode, descriptor: parent)
            if existing != nil { try tree.remove(name, in: parent) }
            if symlinkat(target.cString, parent.fd, name.cString) != 0 {
                throw SystemError("symlinkat", path: displayable(bytes: path), errno: errno)
            }
            if preserveOwnership, let (uid, gid) = try ownerIDs(header, path) {
                if fchownat(parent.fd, name.cString, uid, gid, AT_SYMLINK_NOFOLLOW) != 0 {
                    throw LayerApplier.ownerFailure("fchownat", path: path, uid: uid, gid: gid, errno: errno)
                }
            }
            let time = timespec(tv_sec: time_t(header.mtime), tv_nsec: 0)
            if utimensat(parent.fd, name.cString, [time, time], AT_SYMLINK_NOFOLLOW) != 0 {
                throw SystemError("utimensat", path: displayable(bytes: path), errno: errno)
            }
        case .fifo:
            tree.noteMutation(of: parentNode, descriptor: parent)
            if existing != nil { try tree.remove(name, in: parent) }
            if mkfifoat(parent.fd, name.cString, 0o600) != 0 {
                throw SystemError("mkfifoat", path: displayable(bytes: path), errno: errno)
            }
            let fd = openat(parent.fd, name.cString, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC)
            if fd < 0 { throw SystemError("openat", path: displayable(bytes: path), errno: errno) }
            defer { close(fd) }
            try applyMetadata(fd: fd, header: header, path: path)
        case .characterDevice, .blockDevice:
            warn(path, "device node \(header.rdevMajor):\(header.rdevMinor) not created")
        case .socket, .unknown:
            warn(path, "unsupported entry type skipped")
        }
    }

    /// `path` is only evaluated for the message (finishing directories, it is built from the trie).
    func ownerIDs(_ header: ReadHeader, _ path: @autoclosure () -> [UInt8]) throws -> (uid_t, gid_t)? {
        guard header.uid >= 0, header.uid < Int64(UInt32.max), header.gid >= 0, header.gid < Int64(UInt32.max) else {
            throw tree.refuse(path(), "uid/gid out of range")
        }
        return (uid_t(header.uid), gid_t(header.gid))
    }

    func writeRegularFile(name: [UInt8], path: [UInt8], in parent: DirectoryDescriptor, header: ReadHeader) throws {
        let size = header.size
        if size < 0 || size > limits.maxTotalBytes - contentBytes {
            throw LayerError.limitExceeded(
                layer: layer,
                limit: "entry \(displayable(bytes: path)) declares \(size) bytes; total over \(limits.maxTotalBytes)")
        }
        contentBytes += size
        let fd = openat(parent.fd, name.cString, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if fd < 0 { throw SystemError("openat", path: displayable(bytes: path), errno: errno) }
        defer { close(fd) }
        var block: UnsafeRawPointer?
        var length = 0
        var offset: Int64 = 0
        while true {
            let status = archive_read_data_block(reader.handle, &block, &length, &offset)
            if status == ARCHIVE_EOF { break }
            if status != ARCHIVE_OK && status != ARCHIVE_WARN { throw reader.failure("archive_read_data_block") }
            guard let base = block, length > 0 else { continue }
            if offset < 0 || offset > size - Int64(length) {
                throw tree.refuse(path, "data beyond the declared size")
            }
            var written = 0
            while written < length {
                let count = pwrite(fd, base + written, length - written, off_t(offset) + off_t(written))
                if count < 0 {
                    if errno == EINTR { continue }
                    throw SystemError("pwrite", path: displayable(bytes: path), errno: errno)
                }
                written += count
            }
        }
        if ftruncate(fd, off_t(size)) != 0 {
            throw SystemError("ftruncate", path: displayable(bytes: path), errno: errno)
        }
        try applyMetadata(fd: fd, header: header, path: path)
    }

    func makeHardlink(
        name: [UInt8], path: [UInt8], in parent: DirectoryDescriptor, parentNode: Int, target: [UInt8]
    ) throws {
        if target.count > limits.maxPathBytes { throw tree.refuse(path, "hardlink target too long") }
        guard let targetComponents = normalizedArchivePath(target), let targetName = targetComponents.last else {
            throw tree.refuse(path, "hardlink target \(displayable(bytes: target)) leaves the root")
        }
        guard let targetParent = try tree.openDirectory(targetComponents.dropLast(), for: path),
            let targetStatus = try tree.status(of: targetName, in: targetParent)
        else {
            throw tree.refuse(path, "hardlink target \(displayable(bytes: target)) does not exist")
        }
        guard (UInt32(targetStatus.st_mode) & FileTypeBits.mask) == FileTypeBits.regular else {
            throw tree.refuse(path, "hardlink target \(displayable(bytes: target)) is not a regular file")
        }
        if let existing = try tree.status(of: name, in: parent) {
            if existing.st_dev == targetStatus.st_dev && existing.st_ino == targetStatus.st_ino { return }
            tree.noteMutation(of: parentNode, descriptor: parent)
            try tree.remove(name, in: parent)
        }
        tree.noteMutation(of: parentNode, descriptor: parent)
        if linkat(targetParent.fd, targetName.cString, parent.fd, name.cString, 0) != 0 {
            throw SystemError("linkat", path: displayable(bytes: path), errno: errno)
        }
    }

    /// Owner, then mode (chown clears setuid), xattrs, then times, all through `fd`. `path` is only
    /// evaluated for a message.
    func applyMetadata(fd: Int32, header: ReadHeader, path: @autoclosure () -> [UInt8]) throws {
        if preserveOwnership, let (uid, gid) = try ownerIDs(header, path()) {
            if fchown(fd, uid, gid) != 0 {
                throw LayerApplier.ownerFailure("fchown", path: path(), uid: uid, gid: gid, errno: errno)
            }
        }
        if fchmod(fd, mode_t(header.mode & 0o7777)) != 0 {
            throw SystemError("fchmod", path: displayable(bytes: path()), errno: errno)
        }
        if !header.xattrs.isEmpty {
            // sys/xattr.h is not part of Swift's Glibc module; needs a C shim (see report).
            warn(path(), "xattrs not applied: \(header.xattrs.map(\.name).joined(separator: ","))")
        }
        let time = timespec(tv_sec: time_t(header.mtime), tv_nsec: 0)
        if futimens(fd, [time, time]) != 0 {
            throw SystemError("futimens", path: displayable(bytes: path()), errno: errno)
        }
    }

    /// Removes everything below `directory` (the directory of `node`) that this layer has not created
    /// (opaque whiteout).
    func clearOpaque(_ directory: DirectoryDescriptor, node: Int, depth: Int) throws {
        if depth > RootedTree.maxDepth { throw tree.refuse(paths.path(of: node), "directory tree too deep") }
        if cleared.contains(node) { return }
        for name in try tree.listDirectory(directory) {
            guard let child = paths.child(of: node, named: name) else {
                tree.noteMutation(of: node, descriptor: directory)
                try tree.remove(name, in: directory)
                continue
            }
            let fd = openat(directory.fd, name.cString, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if fd < 0 {
                // A file or symlink this layer made has nothing below it to clear.
                if errno == ENOTDIR || errno == ELOOP { continue }
                throw SystemError("openat", path: displayable(bytes: paths.path(of: child)), errno: errno)
            }
            try clearOpaque(DirectoryDescriptor(fd: fd, owned: true), node: child, depth: depth + 1)
        }
        cleared.insert(node)
    }

    /// Restores times of directories changed but not listed, then applies listed directories'
    /// metadata. Entries replaced later in the layer by non-directories are skipped.
    ///
    /// Walks `paths` depth first, holding one descriptor per level and opening each directory through
    /// its parent: opening each by its path from the root costs D `openat` calls for a directory D deep,
    /// D² for a deep chain.
    func finishDirectories() throws {
        struct Level {
            let directory: DirectoryDescriptor
            var pending: [(name: [UInt8], node: Int)]
        }
        try finish(LayerPaths.root, tree.root)
        var stack = [Level(directory: tree.root, pending: paths.children(of: LayerPaths.root))]
        while var level = stack.popLast() {
            guard let (name, node) = level.pending.popLast() else { continue }
            stack.append(level)
            guard
                paths.hasChildren(node) || directories[node] != nil || tree.preservedTimes[node] != nil
                    || tree.createdParents.contains(node)
            else { continue }
            let fd = openat(level.directory.fd, name.cString, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if fd < 0 {
                // Replaced by a non-directory, or removed, later in the layer: nothing to finish.
                if errno == ENOTDIR || errno == ELOOP || errno == ENOENT { continue }
                throw SystemError("openat", path: displayable(bytes: paths.path(of: node)), errno: errno)
            }
            let directory = DirectoryDescriptor(fd: fd, owned: true)
            try finish(node, directory)
            stack.append(Level(directory: directory, pending: paths.children(of: node)))
        }
    }

    private func finish(_ node: Int, _ directory: DirectoryDescriptor) throws {
        if let header = directories[node] {
            try applyMetadata(fd: directory.fd, header: header, path: paths.path(of: node))
        } else if tree.createdParents.contains(node) {
            let zero = timespec(tv_sec: 0, tv_nsec: 0)
            _ = futimens(directory.fd, [zero, zero])
        } else if let times = tree.preservedTimes[node] {
            _ = futimens(directory.fd, [times.access, times.modification])
        }
    }
}
