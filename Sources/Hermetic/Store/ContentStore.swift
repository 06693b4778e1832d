// Store/ — what a build leaves for the next: blobs by digest, cached steps, compressed layers.

/// The builder's store under the state directory: what one build leaves for the next.
///
/// In: layer blobs already hashed while they were written (into `temporaryDirectory`), and the records
/// of cached steps and compressed layers. Out: the same, by digest or cache key, to later builds.
/// Layout of `<state-dir>/store` (mode 0700):
/// - `blobs/sha256/<hex>`: a blob named by the sha256 of its bytes, moved in by rename only after its
///   writer hashed it, so no blob is ever named by a digest it does not have;
/// - `steps/<key hex>.json`: a cached step (`CachedStep`);
/// - `compressed/<diff_id hex>-<scheme>.json`: the compressed blob of a layer tar for one compression;
/// - `tmp/`: blobs and records being written (a killed build may leave some; they are never read).
/// Records are written to a temporary name beside them (`.hermetic-tmp-*`) and renamed, so readers see a whole record or none. Two
/// builds at once may write the same blob or record: both renames give the same bytes.
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

public struct ContentStore: Sendable {
    public let root: String

    /// Opens (creating what is missing) the store under `stateDirectory`.
    public init(stateDirectory: String) throws {
        root = FileSystem.absolute(stateDirectory) + "/store"
        for directory in [root, root + "/blobs/sha256", root + "/steps", root + "/compressed", root + "/tmp"] {
            try FileSystem.makeDirectories(directory, mode: 0o700)
        }
    }

    /// Where writers put blobs before `adopt` moves them in (same filesystem, so a rename).
    public var temporaryDirectory: String { root + "/tmp" }

    public func blobPath(_ digest: Digest) -> String { root + "/blobs/sha256/" + digest.hex }

    public func hasBlob(_ digest: Digest) -> Bool { FileSystem.exists(blobPath(digest)) }

    /// Moves a file that its writer hashed as `digest` into the store; returns the stored path. A blob the
    /// store already holds under that name is replaced by it (rename is atomic; readers keep what they
    /// opened): the same bytes, or a damaged copy healed by a fresh one.
    public func adopt(fileAt path: String, as digest: Digest) throws -> String {
        let destination = blobPath(digest)
        chmod(path, 0o600)
        if rename(path, destination) != 0 {
            let error = errno
            unlink(path)
            throw SystemError("rename into the store", path: destination, errno: error)
        }
        return destination
    }

    // MARK: Records

    func step(_ key: CacheKey) -> CachedStep? {
        guard let record: CachedStep = readRecord(root + "/steps/" + key.digest.hex + ".json") else { return nil }
        // A record whose layer blob is gone (pruned, or a store copied in part) is a miss, not an error.
        if let layer = record.layer, !hasBlob(layer.diffID) { return nil }
        touch(root + "/steps/" + key.digest.hex + ".json")
        return record
    }

    func storeStep(_ record: CachedStep, for key: CacheKey) throws {
        try writeRecord(record, to: root + "/steps/" + key.digest.hex + ".json")
    }

    func compressedLayer(diffID: Digest, scheme: String) -> Descriptor? {
        let path = root + "/compressed/" + diffID.hex + "-" + scheme + ".json"
        guard let descriptor: Descriptor = readRecord(path), hasBlob(descriptor.digest) else { return nil }
        touch(path)
        return descriptor
    }

    func storeCompressedLayer(_ descriptor: Descriptor, diffID: Digest, scheme: String) throws {
        try writeRecord(descriptor, to: root + "/compressed/" + diffID.hex + "-" + scheme + ".json")
    }

    func readRecord<T: Decodable>(_ path: String) -> T? {
        guard let bytes = try? FileSystem.readFile(path, limit: 1 << 20) else { return nil }
        return try? JSONDecoder().decode(T.self, from: Data(bytes))
    }

    private func writeRecord<T: Encodable>(_ value: T, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try FileSystem.writeAtomically(Array(try encoder.encode(value)), to: path, mode: 0o600)
    }
}

/// A step's cache key: the sha256 of the canonical JSON of everything the step's result depends on
/// (SPEC §10).
struct CacheKey: Hashable, Sendable {
    var digest: Digest
}

/// What a cached RUN, COPY or ADD left: its layer (a tar in the store, by diff_id) and what the build's
/// provenance records of it, so a hit gives the same image and the same attestation as running it.
struct CachedStep: Codable, Sendable {
    struct Layer: Codable, Sendable {
        var diffID: Digest
        var size: Int64
    }
    struct Run: Codable, Sendable {
        struct CacheMount: Codable, Sendable {
            var id: String
            var hadData: Bool
        }
        struct Request: Codable, Sendable {
            var kind: String
            var id: String
            var required: Bool
        }
        var network: String
        var cacheMounts: [CacheMount]
        var secretIDs: [String]
        var sshIDs: [String]
        var requested: [Request]
    }
    var layer: Layer?
    var run: Run?
}
