/// Unpacked layers, kept in the store so that no build unpacks the same layer on the same parents twice.
///
/// In: a layer (its blob and diff_id) and the snapshots of the layers below it. Out: a directory in
/// overlayfs's upper-layer form (the layer's changes over its parents; a deletion is a whiteout, a
/// cleared directory is opaque), which a stage's root stacks as an overlay lower (SPEC §10).
/// Layout of `<store>/snapshots/<name>/` (`name(_:)`: the chain id and the builder's version): `fs/` (the
/// directory) and `snapshot.json` (`Record`).
/// A snapshot is made under `<store>/tmp/` and renamed into place whole, so a killed build leaves only
/// temporary debris, never a half snapshot. The chain id is containerd's: the first layer's is its
/// diff_id, each next one `sha256(parent chain id + " " + diff_id)`, so one layer on other parents is
/// another snapshot.

import Foundation
import Sandbox

#if canImport(Glibc)
    import Glibc
#endif

struct SnapshotStore: Sendable {
    /// What a snapshot is of, and which blobs were seen to unpack to its diff_id (so a base layer that
    /// comes as another blob is checked once more before its snapshot is used).
    struct Record: Codable, Equatable {
        var chainID: Digest
        var diffID: Digest
        var parent: Digest?
        var blobs: [Digest]
    }

    let root: String
    /// Short symlinks to snapshots' filesystems (`shortPath`).
    let linkDirectory: String
    /// Where snapshots are made before they are renamed in (the store's `tmp`, on the same filesystem).
    let temporaryDirectory: String

    init(store: ContentStore) throws {
        root = store.root + "/snapshots"
        linkDirectory = store.root + "/l"
        temporaryDirectory = store.temporaryDirectory
        try FileSystem.makeDirectories(root, mode: 0o700)
        try FileSystem.makeDirectories(linkDirectory, mode: 0o700)
    }

    static func chainID(parent: Digest?, diffID: Digest) -> Digest {
        guard let parent else { return diffID }
        return Digest.sha256(of: Array("\(parent) \(diffID)".utf8))
    }

    /// A snapshot's directory is named for its chain id and the builder that unpacked it, so a builder
    /// whose applier differs never stacks another's snapshots (prune removes those in time).
    static func name(_ chainID: Digest) -> String {
        Digest.sha256(of: Array("snapshot \(HermeticVersion.string) \(HermeticVersion.layerFormat) \(chainID)".utf8))
            .hex
    }

    func directory(_ chainID: Digest) -> String { root + "/" + Self.name(chainID) }

    /// The snapshot's filesystem, when it exists and `blob` is known to unpack to its diff_id.
    func filesystem(_ chainID: Digest, blob: Digest) -> String? {
        let directory = directory(chainID)
        guard let record = record(chainID), record.chainID == chainID, record.blobs.contains(blob) else {
            return nil
        }
        // Last use, for `hermetic prune --filter until=…`.
        utimensat(AT_FDCWD, directory + "/snapshot.json", nil, 0)
        return shortPath(chainID)
    }

    /// `<store>/l/<16 hex>`, a symlink to the snapshot's `fs/`: overlayfs takes its lower directories in
    /// one page of options, and short names let about three times as many layers stack (containerd's
    /// overlay driver does the same). The long path when the link cannot be made.
    func shortPath(_ chainID: Digest) -> String {
        let target = directory(chainID) + "/fs"
        let link = linkDirectory + "/" + String(Self.name(chainID).prefix(16))
        if (try? RootedPath.readLink(link)) == target { return link }
        let temporary = link + ".tmp-" + UUID().uuidString
        guard symlink(target, temporary) == 0 else { return target }
        guard rename(temporary, link) == 0 else {
            unlink(temporary)
            return target
        }
        return link
    }

    func record(_ chainID: Digest) -> Record? {
        guard let bytes = try? FileSystem.readFile(directory(chainID) + "/snapshot.json", limit: 1 << 20) else {
            return nil
        }
        return try? JSONDecoder().decode(Record.self, from: Data(bytes))
    }

    /// Makes the snapshot of `layer` over `lowers` (its parents' filesystems, top first): `unpack` applies
    /// the layer to the directory it is given, the merged view of the parents with an empty upper layer
    /// (`mountpoint`, an empty directory outside the store, so a killed build's mount is cleaned up with
    /// its workspace). Returns the snapshot's filesystem.
    func make(
        _ chainID: Digest, parent: Digest?, diffID: Digest, blob: Digest, lowers: [String], mountpoint: String,
        unpack: (String) throws -> Void
    ) throws -> String {
        let staging = temporaryDirectory + "/snapshot-" + UUID().uuidString
        try FileSystem.makeDirectory(staging, mode: 0o700)
        var kept = false
        defer { if !kept { FileSystem.removeTree(staging) } }
        let upper = staging + "/fs"
        try FileSystem.makeDirectory(upper)
        if let top = lowers.first {
            // The merged root takes the upper directory's owner, mode and times: those of the parents' root,
            // as a directory the layer does not touch keeps them.
            try Self.copyRootAttributes(from: top, to: upper)
            let work = staging + "/work"
            try FileSystem.makeDirectory(work, mode: 0o700)
            try StageRootMount.mountOverlay(lowers: lowers, upper: upper, work: work, at: mountpoint)
            defer { umount2(mountpoint, 2) }  // MNT_DETACH
            try unpack(mountpoint)
            umount2(mountpoint, 2)
            FileSystem.removeTree(work)
        } else {
            try unpack(upper)
        }
        let record = Record(chainID: chainID, diffID: diffID, parent: parent, blobs: [blob])
        try FileSystem.writeAtomically(try JSONEncoder().encode(record).map { $0 }, to: staging + "/snapshot.json")
        let destination = directory(chainID)
        if rename(staging, destination) == 0 {
            kept = true
            return shortPath(chainID)
        }
        let error = errno
        // Another build made it meanwhile (the same bytes): keep theirs, and note that `blob` unpacks to it.
        guard error == EEXIST || error == ENOTEMPTY else {
            throw SystemError("rename into the store", path: destination, errno: error)
        }
        guard var existing = self.record(chainID) else { throw DamagedSnapshotError(directory: destination) }
        if !existing.blobs.contains(blob) {
            existing.blobs.append(blob)
            try FileSystem.writeAtomically(
                try JSONEncoder().encode(existing).map { $0 }, to: destination + "/snapshot.json", mode: 0o600)
        }
        return shortPath(chainID)
    }

    private static func copyRootAttributes(from source: String, to destination: String) throws {
        var info = stat()
        // `source` may be a short link to the snapshot: its directory is what counts.
        guard stat(source, &info) == 0 else { throw SystemError("stat", path: source, errno: errno) }
        guard lchown(destination, info.st_uid, info.st_gid) == 0, chmod(destination, info.st_mode & 0o7777) == 0 else {
            throw SystemError("chown/chmod", path: destination, errno: errno)
        }
        var times = [info.st_atim, info.st_mtim]
        utimensat(AT_FDCWD, destination, &times, AT_SYMLINK_NOFOLLOW)
    }
}

/// A snapshot directory without a readable record (something other than a build put it there).
struct DamagedSnapshotError: HermeticError {
    var directory: String
    var description: String {
        "the store's snapshot \(directory) has no readable snapshot.json; run hermetic store check --repair"
    }
}

/// The overlay mounts that present snapshots as one tree, in the builder's mount namespace. They lie in
/// the build's workspace, so the workspace's removal (or the janitor, after a killed build) unmounts them.
enum StageRootMount {
    /// overlayfs reads its options from one page: with a few hundred bytes kept for the rest, how long the
    /// joined lower directories may be. A longer stack is unpacked into a plain directory instead.
    static let maximumLowerBytes = 3500

    struct MountError: HermeticError {
        var target: String
        var errno: Int32
        var description: String {
            "mounting an overlay at \(target): \(String(cString: strerror(errno)))"
        }
    }

    static func fits(_ lowers: [String]) -> Bool {
        lowers.reduce(0) { $0 + $1.utf8.count + 1 } <= maximumLowerBytes
            && lowers.allSatisfy { Sandbox.canNameInOverlayOptions($0) }
    }

    /// A writable overlay (for making a snapshot). Copy-up stays whole (no metacopy, no redirects, no
    /// index), so the upper directory holds the layer's files and never points into its parents.
    static func mountOverlay(lowers: [String], upper: String, work: String, at target: String) throws {
        let base = "lowerdir=\(lowers.joined(separator: ":")),upperdir=\(upper),workdir=\(work)"
        try mount(options: [base + ",index=off,metacopy=off,redirect_dir=off", base], flags: 0, at: target)
    }

    /// A read-only view of `lowers` (top first); overlayfs needs two lowers without an upper, so a single
    /// snapshot is stacked on `empty`.
    static func mountReadOnly(lowers: [String], empty: String, at target: String) throws {
        let stack = lowers.count == 1 ? lowers + [empty] : lowers
        let base = "lowerdir=\(stack.joined(separator: ":"))"
        try mount(
            options: [base + ",index=off,metacopy=off,redirect_dir=off", base], flags: UInt(MS_RDONLY), at: target)
    }

    /// Tries each option string in turn: an older kernel refuses the options it does not know.
    private static func mount(options: [String], flags: UInt, at target: String) throws {
        var code: Int32 = 0
        for option in options {
            if Glibc.mount("overlay", target, "overlay", flags, option) == 0 { return }
            code = errno
            if code != EINVAL { break }
        }
        throw MountError(target: target, errno: code)
    }
}
