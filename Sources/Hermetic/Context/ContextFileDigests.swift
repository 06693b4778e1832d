import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The sha256 of the build context's regular files, remembered in the store from one build to the next
/// by what `fstat` says of each file: device, inode, size, mtime and ctime, all to the nanosecond. A file
/// whose five match is not read again (BuildKit's content hash cache keeps a file's digest by its stat in
/// the same way). ctime moves on every write, rename, chmod and `touch`, and no caller can set it, so a
/// changed file never matches; a file changed within the clock's tick after it was last looked at could,
/// so (as git does with its racily clean index entries) a file whose mtime or ctime is less than two
/// seconds older than the moment it was read is never remembered. SPEC §10, "Context file digests".
///
/// The table of one context directory is `STORE/context-digests/<sha256 of the directory's path>`: loaded
/// when the build starts, replaced whole (atomically) when it ends with the files this build read, so a
/// deleted file leaves it. A table that does not parse is ignored.
final class ContextFileDigests: @unchecked Sendable {
    /// What identifies a file's bytes between two builds.
    struct FileState: Hashable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modified: Int64
        var changed: Int64

        init(_ info: stat) {
            device = UInt64(info.st_dev)
            inode = UInt64(info.st_ino)
            size = Int64(info.st_size)
            modified = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
            changed = Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec)
        }

        init(device: UInt64, inode: UInt64, size: Int64, modified: Int64, changed: Int64) {
            (self.device, self.inode, self.size, self.modified, self.changed) = (device, inode, size, modified, changed)
        }
    }

    static let header = "hermetic context digests 1"
    /// A file changed this close (nanoseconds) before it was read is not remembered.
    static let racyWindow: Int64 = 2_000_000_000

    let root: String
    let tablePath: String
    private let lock = NSLock()
    private var known: [FileState: Digest]
    private var seen: [FileState: Digest] = [:]

    /// `trusted` false (`--no-cache`): the table is not read, every file is; it is still written.
    init(store: ContentStore, root: String, trusted: Bool) {
        self.root = root
        tablePath = store.root + "/context-digests/" + Digest.sha256(of: Array(root.utf8)).hex
        known = trusted ? (try? FileSystem.readFile(tablePath, limit: 512 << 20)).flatMap(Self.parse) ?? [:] : [:]
    }

    /// Whether `path` is in the context directory (other trees, a stage's root, are never remembered:
    /// their inodes come and go with the workspace).
    func covers(_ path: String) -> Bool { path.hasPrefix(root + "/") }

    /// The digest of the regular file at `path` (never followed if it is a symlink), from the table when
    /// the file's state matches, else read.
    func digest(of path: String) throws -> Digest {
        let file = try ContextDigest.openRegularFile(path)
        defer { close(file.descriptor) }
        let before = FileState(file.info)
        if let digest = lock.withLock({ known[before] }) {
            lock.withLock { seen[before] = digest }
            return digest
        }
        let readFrom = Self.now()
        let digest = try ContextDigest.hash(descriptor: file.descriptor, path: path)
        var after = stat()
        if fstat(file.descriptor, &after) == 0, FileState(after) == before,
            max(before.modified, before.changed) < readFrom - Self.racyWindow
        {
            lock.withLock { seen[before] = digest }
        }
        return digest
    }

    /// Replaces the table with the files this build read; a failure only costs the next build a reading.
    func save() {
        let entries = lock.withLock { seen }
        guard entries != known else { return }
        var text = Self.header + "\n"
        for (state, digest) in entries {
            text += "\(state.device) \(state.inode) \(state.size) \(state.modified) \(state.changed) \(digest.hex)\n"
        }
        try? FileSystem.makeDirectories(FileSystem.parentDirectory(of: tablePath))
        try? FileSystem.writeAtomically(Array(text.utf8), to: tablePath)
    }

    static func parse(_ bytes: [UInt8]) -> [FileState: Digest]? {
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        guard lines.first == Substring(header) else { return nil }
        var table: [FileState: Digest] = [:]
        for line in lines.dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count == 6, let device = UInt64(fields[0]), let inode = UInt64(fields[1]),
                let size = Int64(fields[2]), let modified = Int64(fields[3]), let changed = Int64(fields[4]),
                let digest = try? Digest(parsing: "sha256:" + fields[5])
            else { return nil }
            table[FileState(device: device, inode: inode, size: size, modified: modified, changed: changed)] = digest
        }
        return table
    }

    private static func now() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }
}
