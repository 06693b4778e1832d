/// What `hermetic du`, `hermetic prune` and `hermetic store check` do with the store (SPEC §10).
///
/// In: the store under a state directory. Out: its usage by kind; the entries a prune removed; the entries
/// a check found wrong (and removed, with `repair`). A build holds the store's lock shared for its whole
/// run; prune and repair take it exclusively, so they never remove what a running build uses.
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An open lock on the store, released when the value is.
public final class StoreLock {
    private let fd: Int32

    init(path: String, exclusive: Bool) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
        while flock(fd, exclusive ? LOCK_EX : LOCK_SH) != 0 {
            if errno == EINTR { continue }
            let error = errno
            close(fd)
            throw SystemError("flock", path: path, errno: error)
        }
    }

    deinit { close(fd) }
}

/// One kind of entry in the store, as `du` shows it.
public struct StoreUsage: Sendable, Equatable {
    public var kind: String
    public var entries: Int
    public var bytes: Int64
    /// Seconds since the epoch of the last build that used one of them (nil when there are none).
    public var lastUsed: Int64?
}

/// A problem `store check` found, and whether it was repaired.
public struct StoreFinding: Sendable, CustomStringConvertible {
    public var path: String
    public var problem: String
    public var repaired: Bool
    public var description: String { "\(path): \(problem)\(repaired ? " (removed)" : "")" }
}

extension ContentStore {
    var lockPath: String { root + "/lock" }

    /// Held by a build from start to end: prune waits for it.
    public func lockForBuild() throws -> StoreLock { try StoreLock(path: lockPath, exclusive: false) }

    /// Marks a record as used now: `du` shows it and `prune --filter until=` and `--keep-storage` keep the
    /// most recently used.
    func touch(_ path: String) {
        utimes(path, nil)  // both times to now
    }

    /// The cache mounts of RUN steps live beside the store (`STATE/cache`), not in it.
    var cacheMountsDirectory: String { FileSystem.parentDirectory(of: root) + "/cache" }

    public func usage() throws -> [StoreUsage] {
        let steps = try records("steps")
        let compressed = try records("compressed")
        let blobs = try listing(root + "/blobs/sha256")
        let mounts = try listing(cacheMountsDirectory)
        let snapshots = try snapshotListing()
        func summary(_ kind: String, _ items: [(path: String, info: stat)], deep: Bool = false) -> StoreUsage {
            let bytes = items.reduce(Int64(0)) { $0 + (deep ? Self.treeSize($1.path) : Int64($1.info.st_size)) }
            let last = items.map { Int64($0.info.st_mtim.tv_sec) }.max()
            return StoreUsage(kind: kind, entries: items.count, bytes: bytes, lastUsed: last)
        }
        return [
            summary("cached steps", steps), summary("compressed layers", compressed),
            summary("blobs", blobs), summary("snapshots", snapshots, deep: true),
            summary("cache mounts", mounts, deep: true),
        ]
    }

    /// Removes cached steps, compressed layers and snapshots last used before `usedBefore` (all when nil),
    /// then, with `keepBytes`, the least recently used until blobs and snapshots take at most that; then
    /// every blob no record names and every leftover of a killed build in `tmp/`. `includeCacheMounts` (`--all`) also empties the
    /// cache mounts. Returns the number of entries and bytes removed.
    public func prune(usedBefore: Int64?, keepBytes: Int64?, includeCacheMounts: Bool) throws -> (
        entries: Int, bytes: Int64
    ) {
        let lock = try StoreLock(path: lockPath, exclusive: true)
        defer { withExtendedLifetime(lock) {} }
        var removed = (entries: 0, bytes: Int64(0))
        func remove(_ path: String, size: Int64) {
            if FileSystem.isDirectory(path) { FileSystem.removeTree(path) } else { unlink(path) }
            removed.entries += 1
            removed.bytes += size
        }
        // The remembered context file digests are a cheap cache of reads: any prune drops them whole.
        let digestTables = root + "/context-digests"
        if FileSystem.isDirectory(digestTables) { remove(digestTables, size: Self.treeSize(digestTables)) }
        // A snapshot's `snapshot.json` is touched when a build uses it; the entry is its directory.
        var records =
            try self.records("steps") + self.records("compressed")
            + snapshotListing().map { (path: $0.path, info: $0.info) }
        if let usedBefore {
            for record in records where Int64(record.info.st_mtim.tv_sec) < usedBefore {
                remove(record.path, size: Int64(record.info.st_size))
            }
            records.removeAll { Int64($0.info.st_mtim.tv_sec) < usedBefore }
        } else if keepBytes == nil {
            for record in records { remove(record.path, size: Int64(record.info.st_size)) }
            records = []
        }
        if let keepBytes {
            var sizes = try blobSizes()
            var snapshotBytes: [String: Int64] = [:]
            for record in records where record.path.hasPrefix(snapshotsDirectory + "/") {
                snapshotBytes[record.path] = Self.treeSize(record.path)
            }
            records.sort { $0.info.st_mtim.tv_sec < $1.info.st_mtim.tv_sec }  // least recently used first
            while sizes.values.reduce(0, +) + snapshotBytes.values.reduce(0, +) > keepBytes, let oldest = records.first
            {
                records.removeFirst()
                if let bytes = snapshotBytes.removeValue(forKey: oldest.path) {
                    remove(oldest.path, size: bytes)
                } else {
                    remove(oldest.path, size: Int64(oldest.info.st_size))
                }
                let stillNamed = try referencedBlobs()
                for (digest, size) in sizes where !stillNamed.contains(digest) {
                    remove(blobPath(digest), size: size)
                    sizes[digest] = nil
                }
            }
        }
        let named = try referencedBlobs()
        for (digest, size) in try blobSizes() where !named.contains(digest) { remove(blobPath(digest), size: size) }
        removeOrphanSources()
        for leftover in try listing(temporaryDirectory) { remove(leftover.path, size: Int64(leftover.info.st_size)) }
        for link in try danglingSnapshotLinks() { unlink(link) }
        if includeCacheMounts {
            for mount in try listing(cacheMountsDirectory) { remove(mount.path, size: Self.treeSize(mount.path)) }
        }
        return removed
    }

    /// Reads every blob against its name and every record against its blobs. With `repair`, removes what
    /// is wrong (a record is then a miss; nothing else names a blob).
    public func check(repair: Bool) throws -> [StoreFinding] {
        let lock = try StoreLock(path: lockPath, exclusive: repair)
        defer { withExtendedLifetime(lock) {} }
        var findings: [StoreFinding] = []
        func found(_ path: String, _ problem: String) {
            if repair { unlink(path) }
            findings.append(StoreFinding(path: path, problem: problem, repaired: repair))
        }
        for blob in try listing(root + "/blobs/sha256") {
            let name = FileSystem.baseName(blob.path)
            guard let expected = try? Digest(parsing: "sha256:" + name) else {
                found(blob.path, "not named by a sha256 digest")
                continue
            }
            let actual = try ContextDigest.fileDigest(blob.path)
            if actual != expected { found(blob.path, "its bytes are \(actual)") }
        }
        for record in try records("steps") {
            guard let step: CachedStep = readRecord(record.path) else {
                found(record.path, "not a cached step record")
                continue
            }
            if let layer = step.layer, !hasBlob(layer.diffID) {
                found(record.path, "its layer \(layer.diffID) is missing")
            }
        }
        for record in try records("compressed") {
            guard let descriptor: Descriptor = readRecord(record.path) else {
                found(record.path, "not a compressed-layer record")
                continue
            }
            if !hasBlob(descriptor.digest) { found(record.path, "its blob \(descriptor.digest) is missing") }
        }
        for record in try records("sources") {
            let hex = String(FileSystem.baseName(record.path).dropLast(".json".count))
            let source: [String: [String]]? = readRecord(record.path)
            if source == nil {
                found(record.path, "not a blob source record")
            } else if (try? Digest(parsing: "sha256:" + hex)).map(hasBlob) != true {
                found(record.path, "the source of blob sha256:\(hex), which the store lacks")
            }
        }
        for snapshot in try snapshotListing() {
            let name = FileSystem.baseName(snapshot.path)
            let record: SnapshotStore.Record? = readRecord(snapshot.path + "/snapshot.json")
            let problem: String? =
                record == nil
                ? "not a snapshot (no readable snapshot.json)"
                : record.map { SnapshotStore.name($0.chainID) } != name
                    ? "its record names another chain id"
                    : FileSystem.isDirectory(snapshot.path + "/fs") ? nil : "its fs/ is missing"
            if let problem {
                if repair { FileSystem.removeTree(snapshot.path) }
                findings.append(StoreFinding(path: snapshot.path, problem: problem, repaired: repair))
            }
        }
        for link in try danglingSnapshotLinks() {
            if repair { unlink(link) }
            findings.append(StoreFinding(path: link, problem: "a link to no snapshot", repaired: repair))
        }
        if !repair {
            for leftover in try listing(temporaryDirectory) {
                findings.append(
                    StoreFinding(path: leftover.path, problem: "left by a build that did not finish", repaired: false))
            }
        } else if let lockedOut = try? listing(temporaryDirectory) {
            // Exclusive lock: no build is running, so everything in tmp/ is a leftover.
            for leftover in lockedOut {
                FileSystem.removeTree(leftover.path)
                findings.append(
                    StoreFinding(path: leftover.path, problem: "left by a build that did not finish", repaired: true))
            }
        }
        return findings
    }

    // MARK: Listing

    private func records(_ kind: String) throws -> [(path: String, info: stat)] {
        try listing(root + "/" + kind).filter { $0.path.hasSuffix(".json") }
    }

    var snapshotsDirectory: String { root + "/snapshots" }

    /// The short links of `l/` (SnapshotStore.shortPath) whose snapshot is gone.
    private func danglingSnapshotLinks() throws -> [String] {
        try listing(root + "/l").compactMap { entry in
            var info = stat()
            return stat(entry.path, &info) == 0 ? nil : entry.path
        }
    }

    /// The snapshot directories, each with the status of its `snapshot.json` (its last use), or of the
    /// directory itself when the record is missing.
    private func snapshotListing() throws -> [(path: String, info: stat)] {
        try listing(snapshotsDirectory).map { entry in
            var info = stat()
            return lstat(entry.path + "/snapshot.json", &info) == 0 ? (entry.path, info) : entry
        }
    }

    private func listing(_ directory: String) throws -> [(path: String, info: stat)] {
        guard FileSystem.isDirectory(directory) else { return [] }
        return (FileSystem.directoryNames(directory) ?? []).sorted().compactMap { name in
            var info = stat()
            guard lstat(directory + "/" + name, &info) == 0 else { return nil }
            return (directory + "/" + name, info)
        }
    }

    private func blobSizes() throws -> [Digest: Int64] {
        var sizes: [Digest: Int64] = [:]
        for blob in try listing(root + "/blobs/sha256") {
            if let digest = try? Digest(parsing: "sha256:" + FileSystem.baseName(blob.path)) {
                sizes[digest] = Int64(blob.info.st_size)
            }
        }
        return sizes
    }

    private func referencedBlobs() throws -> Set<Digest> {
        var named: Set<Digest> = []
        for record in try records("steps") {
            if let step: CachedStep = readRecord(record.path), let layer = step.layer { named.insert(layer.diffID) }
        }
        for record in try records("compressed") {
            if let descriptor: Descriptor = readRecord(record.path) { named.insert(descriptor.digest) }
        }
        // A snapshot names the blobs seen to unpack to it: a base image's layers, kept for export.
        for snapshot in try listing(snapshotsDirectory) {
            if let record: SnapshotStore.Record = readRecord(snapshot.path + "/snapshot.json") {
                named.formUnion(record.blobs)
            }
        }
        return named
    }

    static func treeSize(_ path: String) -> Int64 {
        var info = stat()
        guard lstat(path, &info) == 0 else { return 0 }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { return Int64(info.st_size) }
        let names = FileSystem.directoryNames(path) ?? []
        return names.reduce(Int64(0)) { $0 + treeSize(path + "/" + $1) }
    }
}
