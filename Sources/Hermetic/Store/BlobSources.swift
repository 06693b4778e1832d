import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Where the store's blobs were pulled from: `sources/<hex>.json` beside `blobs/`, one record per blob
/// digest, `{"REGISTRY": ["REPO", …]}` (containerd's `containerd.io/distribution.source.REGISTRY=REPO,…`
/// content label, as a file). A push uses it to mount a blob the registry holds in another repository
/// (SPEC §1.2) instead of uploading it. It is a hint, never trusted for content: a lost or stale record
/// costs only an upload. Prune removes the record of a blob it removes.
extension ContentStore {
    var sourcesDirectory: String { root + "/sources" }

    private func sourcesPath(_ digest: Digest) -> String { sourcesDirectory + "/" + digest.hex + ".json" }

    /// The repositories of `registry` the blob was pulled from, oldest first.
    func sourceRepositories(of digest: Digest, registry: String) -> [String] {
        let record: [String: [String]]? = readRecord(sourcesPath(digest))
        return record?[registry] ?? []
    }

    /// Notes that `registry/repository` holds the blob. Two builds noting one blob at once may lose one
    /// name (the last rename wins): a lost name costs only a mount.
    func recordSource(of digest: Digest, registry: String, repository: String) throws {
        var record: [String: [String]] = readRecord(sourcesPath(digest)) ?? [:]
        guard !(record[registry] ?? []).contains(repository) else { return }
        record[registry, default: []].append(repository)
        try FileSystem.makeDirectories(sourcesDirectory, mode: 0o700)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try FileSystem.writeAtomically(Array(try encoder.encode(record)), to: sourcesPath(digest), mode: 0o600)
    }

    /// Removes the records of blobs the store no longer holds (after a prune removed them).
    func removeOrphanSources() {
        for name in FileSystem.directoryNames(sourcesDirectory) ?? [] where name.hasSuffix(".json") {
            let hex = String(name.dropLast(".json".count))
            if !FileSystem.exists(root + "/blobs/sha256/" + hex) { unlink(sourcesDirectory + "/" + name) }
        }
    }
}
