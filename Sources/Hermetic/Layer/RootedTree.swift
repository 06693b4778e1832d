#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A directory file descriptor, closed on release unless it borrows the root's.
final class DirectoryDescriptor {
    let fd: Int32
    private let owned: Bool
    init(fd: Int32, owned: Bool) {
        self.fd = fd
        self.owned = owned
    }
    deinit { if owned { close(fd) } }
}

/// File-system operations confined to a root directory. Every path is walked one component at
/// a time with `openat(O_DIRECTORY | O_NOFOLLOW)`, so no operation ever resolves a symlink:
/// a symlink (or a non-directory) in a parent position is refused, and final components are
/// created with `O_EXCL`/`O_NOFOLLOW` or operated on with `AT_SYMLINK_NOFOLLOW`.
final class RootedTree {
    let root: DirectoryDescriptor
    let layer: String
    /// Times of directories whose contents this layer changed, recorded before the first change,
    /// so they can be restored (the tar does not mention them). Keyed by `LayerPaths` node.
    private(set) var preservedTimes: [Int: (access: timespec, modification: timespec)] = [:]
    /// Directories this layer created because an entry needed them (the layer does not list them):
    /// they get time 0. A set, not times, as a hostile layer can make many.
    private(set) var createdParents: Set<Int> = []
    static let maxDepth = 2048

    init(path: String, layer: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw SystemError("open", path: path, errno: errno) }
        root = DirectoryDescriptor(fd: fd, owned: true)
        self.layer = layer
    }

    func refuse(_ path: [UInt8], _ reason: String) -> LayerError {
        .hostileEntry(layer: layer, path: displayable(bytes: path), reason: reason)
    }

    /// Opens the directory at `components` below the root. With `nodes` (the `LayerPaths` node of each
    /// prefix of `components`), missing directories are created (mode 0755, time 0) and recorded;
    /// without, nil is returned for a missing directory.
    func openDirectory(_ components: ArraySlice<[UInt8]>, creating nodes: [Int]? = nil, for entryPath: [UInt8])
        throws -> DirectoryDescriptor?
    {
        if components.count > Self.maxDepth { throw refuse(entryPath, "deeper than \(Self.maxDepth) components") }
        precondition(nodes.map { $0.count == components.count } ?? true, "one node per component")
        var current = root
        for (depth, component) in components.enumerated() {
            var fd = openat(current.fd, component.cString, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if fd < 0 && errno == ENOENT {
                guard let nodes else { return nil }
                noteMutation(of: depth == 0 ? LayerPaths.root : nodes[depth - 1], descriptor: current)
                if mkdirat(current.fd, component.cString, 0o700) != 0 && errno != EEXIST {
                    let code = errno
                    throw SystemError(
                        "mkdirat", path: displayable(bytes: shown(components, through: depth)), errno: code)
                }
                fd = openat(current.fd, component.cString, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if fd >= 0 {
                    fchmod(fd, 0o755)
                    createdParents.insert(nodes[depth])
                }
            }
            if fd < 0 {
                let code = errno
                let walked = shown(components, through: depth)
                if code == ELOOP || code == ENOTDIR {
                    var status = stat()
                    let isLink =
                        fstatat(current.fd, component.cString, &status, AT_SYMLINK_NOFOLLOW) == 0
                        && (UInt32(status.st_mode) & FileTypeBits.mask) == FileTypeBits.symlink
                    throw refuse(
                        entryPath,
                        "parent \(displayable(bytes: walked)) is \(isLink ? "a symlink" : "not a directory"); not writing through it"
                    )
                }
                throw SystemError("openat", path: displayable(bytes: walked), errno: code)
            }
            current = DirectoryDescriptor(fd: fd, owned: true)
        }
        return current
    }

    /// The first `depth + 1` components joined, for messages.
    private func shown(_ components: ArraySlice<[UInt8]>, through depth: Int) -> [UInt8] {
        joinedPath(components.prefix(depth + 1))
    }

    /// Records the times of the directory of `node` (open as `descriptor`) before its contents change
    /// for the first time in this layer.
    func noteMutation(of node: Int, descriptor: DirectoryDescriptor) {
        guard preservedTimes[node] == nil, !createdParents.contains(node) else { return }
        var status = stat()
        if fstat(descriptor.fd, &status) == 0 {
            preservedTimes[node] = (status.st_atim, status.st_mtim)
        }
    }

    /// lstat of a final component; nil when it does not exist.
    func status(of name: [UInt8], in directory: DirectoryDescriptor) throws -> stat? {
        var status = stat()
        if fstatat(directory.fd, name.cString, &status, AT_SYMLINK_NOFOLLOW) == 0 { return status }
        if errno == ENOENT { return nil }
        throw SystemError("fstatat", path: displayable(bytes: name), errno: errno)
    }

    /// Removes whatever is at `name` (a whole tree for a directory), never following symlinks.
    func remove(_ name: [UInt8], in directory: DirectoryDescriptor, depth: Int = 0) throws {
        // Only ever one entry of `directory`: `.`, `..` or a slash would name the directory itself, its
        // parent (outside the root, at the top) or a path elsewhere.
        if name.isEmpty || name == [UInt8(ascii: ".")] || name == Array("..".utf8) || name.contains(UInt8(ascii: "/")) {
            throw refuse(name, "not a single name in its directory; nothing removed")
        }
        guard let status = try status(of: name, in: directory) else { return }
        if (UInt32(status.st_mode) & FileTypeBits.mask) == FileTypeBits.directory {
            if depth > Self.maxDepth { throw refuse(name, "directory tree deeper than \(Self.maxDepth)") }
            let fd = openat(directory.fd, name.cString, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if fd < 0 { throw SystemError("openat", path: displayable(bytes: name), errno: errno) }
            let child = DirectoryDescriptor(fd: fd, owned: true)
            for entry in try listDirectory(child) {
                try remove(entry, in: child, depth: depth + 1)
            }
            if unlinkat(directory.fd, name.cString, AT_REMOVEDIR) != 0 {
                throw SystemError("unlinkat", path: displayable(bytes: name), errno: errno)
            }
        } else if unlinkat(directory.fd, name.cString, 0) != 0 {
            throw SystemError("unlinkat", path: displayable(bytes: name), errno: errno)
        }
    }

    /// Names in a directory, without `.` and `..`.
    func listDirectory(_ directory: DirectoryDescriptor) throws -> [[UInt8]] {
        let copy = dup(directory.fd)
        if copy < 0 { throw SystemError("dup", path: "directory", errno: errno) }
        guard let stream = fdopendir(copy) else {
            close(copy)
            throw SystemError("fdopendir", path: "directory", errno: errno)
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [[UInt8]] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: &entry.pointee.d_name) { raw in
                Array(raw.prefix { $0 != 0 })
            }
            if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
            names.append(name)
        }
        return names
    }
}

extension Array where Element == UInt8 {
    /// The bytes as a NUL-terminated C string (names never contain NUL: tar stores C strings).
    var cString: [CChar] { map { CChar(bitPattern: $0) } + [0] }
}
