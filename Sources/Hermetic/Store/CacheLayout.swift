// Store/ — the exported build cache (`--cache-to type=local`), and reading one back (`--cache-from`).

import Foundation
import Provenance

#if canImport(Glibc)
    import Glibc
#endif

/// The exported build cache: an OCI image layout whose one entry in `index.json` is an artifact manifest
/// (SPEC §10, "Cache export and import"). Its config blob lists the cached steps (cache key → `CachedStep`);
/// its layers are the uncompressed layer tars those steps name, each stored under its diff_id. So the
/// registry variant can push and pull the same manifest and blobs.
enum CacheLayout {
    static let artifactType = "application/vnd.dev.hermetic.buildcache.v1"
    static let configMediaType = "application/vnd.dev.hermetic.buildcache.config.v1+json"
    /// The tag in index.json, as buildx's local cache names its manifest.
    static let tag = "latest"
    /// index.json and the manifest (a descriptor per layer): more is not a cache we wrote.
    static let maximumManifestSize = 4 << 20
    /// The list of steps (about 300 bytes each).
    static let maximumConfigSize = 64 << 20

    struct Config: Codable {
        struct Step: Codable {
            var key: Digest
            var step: CachedStep
        }
        var format = 1
        var builder = HermeticVersion.string
        var layerFormat = HermeticVersion.layerFormat
        var steps: [Step]
    }
}

/// Why a blob could not be copied: missing, not a regular file, or bytes that are not its digest.
struct CacheBlobError: HermeticError {
    var path: String
    var reason: String
    var description: String { "\(path): \(reason)" }
}

enum CacheBlobCopy {
    /// Copies the blob `source` to the new file `destination`, checked against `digest` and `size`; a
    /// symlink is refused, not followed.
    static func copy(_ source: String, to destination: String, digest: Digest, size: Int64) throws {
        do {
            try CheckedFileCopy.copy(source, to: destination, digest: digest, size: size, followSymlinks: false)
        } catch let refusal as CheckedFileCopy.Refusal {
            throw CacheBlobError(path: source, reason: refusal.description)
        }
    }
}

/// What a cache export is, wherever it goes (a layout directory or a registry): the config blob that lists
/// the cached steps of `keys` the store holds, the layer tars they name (store blobs under their diff_id),
/// and the artifact manifest over them. The same steps give the same bytes.
struct CacheManifest {
    var steps: Int
    /// Each a store blob, named by its diff_id; sorted by digest, each once.
    var layers: [Descriptor]
    var config: [UInt8]
    var configDescriptor: Descriptor
    var manifest: [UInt8]
    /// The manifest's descriptor, with its `artifactType`.
    var descriptor: Descriptor

    init(keys: [CacheKey], store: ContentStore) throws {
        var seen = Set<CacheKey>()
        var steps: [CacheLayout.Config.Step] = []
        for key in keys where seen.insert(key).inserted {
            // A step this build ran without a cache (none here) or whose record went: nothing to export.
            guard let step = store.step(key) else { continue }
            steps.append(.init(key: key.digest, step: step))
        }
        steps.sort { $0.key < $1.key }
        var layers: [Digest: Descriptor] = [:]
        for layer in steps.compactMap(\.step.layer) where layers[layer.diffID] == nil {
            layers[layer.diffID] = Descriptor(mediaType: MediaType.layerTar, digest: layer.diffID, size: layer.size)
        }
        self.steps = steps.count
        self.layers = layers.values.sorted { $0.digest < $1.digest }
        config = try CanonicalJSON.encode(CacheLayout.Config(steps: steps))
        configDescriptor = Descriptor(
            mediaType: CacheLayout.configMediaType, digest: Digest.sha256(of: config), size: Int64(config.count))
        var manifest = ImageManifest(config: configDescriptor, layers: self.layers)
        manifest.artifactType = CacheLayout.artifactType
        self.manifest = try CanonicalJSON.encode(manifest)
        descriptor = Descriptor(
            mediaType: MediaType.imageManifest, digest: Digest.sha256(of: self.manifest),
            size: Int64(self.manifest.count))
        descriptor.artifactType = CacheLayout.artifactType
    }
}

/// Writes the cached steps of `keys` (those the store holds) and their layer tars as a cache layout.
struct CacheLayoutWriter {
    var store: ContentStore

    /// A store blob whose bytes are not its digest: the build stops, as a hit on it would (SPEC §10).
    struct DamagedStoreError: HermeticError {
        var destination: String
        var blob: CacheBlobError
        var description: String {
            "--cache-to \(destination): the build cache's copy of a layer cannot be used (\(blob)); run hermetic "
                + "store check --repair"
        }
    }

    /// Fills the empty directory `layout`; returns how many steps and layers it holds.
    func write(keys: [CacheKey], into layout: String, destination: String) throws -> (steps: Int, layers: Int) {
        let cache = try CacheManifest(keys: keys, store: store)
        let blobs = layout + "/blobs/sha256"
        try FileSystem.makeDirectories(blobs)
        for layer in cache.layers {
            do {
                try CacheBlobCopy.copy(
                    store.blobPath(layer.digest), to: blobs + "/" + layer.digest.hex, digest: layer.digest,
                    size: layer.size)
            } catch let error as CacheBlobError {
                throw DamagedStoreError(destination: destination, blob: error)
            }
        }
        try FileSystem.writeAtomically(cache.config, to: blobs + "/" + cache.configDescriptor.digest.hex)
        try FileSystem.writeAtomically(cache.manifest, to: blobs + "/" + cache.descriptor.digest.hex)
        var entry = cache.descriptor
        entry.annotations = ["org.opencontainers.image.ref.name": CacheLayout.tag]
        try FileSystem.writeAtomically(
            Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: layout + "/oci-layout")
        try FileSystem.writeAtomically(
            try CanonicalJSON.encode(ImageIndex(manifests: [entry])), to: layout + "/index.json")
        return (cache.steps, cache.layers.count)
    }
}

/// Reads a cache layout into the store: each step whose layer tar is there and is its diff_id becomes a
/// cached step of the store. Nothing in it stops the build: what cannot be used is named in a warning.
struct CacheLayoutReader {
    var store: ContentStore
    var warn: (String) -> Void

    /// Why a whole layout is not used.
    struct LayoutError: Error {
        var reason: String
    }

    /// Imports what can be used from `source`; returns how many steps it made available.
    @discardableResult
    func importCache(from source: String) -> Int {
        let root = FileSystem.absolute(source)
        let name = "--cache-from type=local,src=\(source)"
        var info = stat()
        guard lstat(root, &info) == 0 else {
            // As buildx: a missing local cache is a warning, and the build runs without it.
            warn("\(name): \(root) does not exist; no cache imported")
            return 0
        }
        let steps: [CacheLayout.Config.Step]
        do {
            steps = try readSteps(root)
        } catch let error as LayoutError {
            warn("\(name): \(error.reason); no cache imported")
            return 0
        } catch {
            warn("\(name): \(error); no cache imported")
            return 0
        }
        var imported = 0
        for entry in steps {
            // The store's own record of a key is kept: it gives the same result (the key says so).
            if store.step(CacheKey(digest: entry.key)) != nil {
                imported += 1
                continue
            }
            do {
                if let layer = entry.step.layer, !store.hasBlob(layer.diffID) {
                    try importBlob(root, digest: layer.diffID, size: layer.size)
                }
                try store.storeStep(entry.step, for: CacheKey(digest: entry.key))
                imported += 1
            } catch {
                warn("\(name): cached step \(entry.key) skipped: \(error)")
            }
        }
        return imported
    }

    private func readSteps(_ root: String) throws -> [CacheLayout.Config.Step] {
        guard FileSystem.isDirectory(root) else {
            throw LayoutError(reason: "\(root) is not a directory (not a cache layout)")
        }
        // DIR itself may be a symlink (a person's choice); what is inside it is not followed.
        for directory in [root + "/blobs", root + "/blobs/sha256"] {
            var info = stat()
            guard lstat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
                throw LayoutError(reason: "\(directory) is not a directory (not a cache layout)")
            }
        }
        let indexBytes = try readJSON(root + "/index.json", limit: CacheLayout.maximumManifestSize)
        guard let index = try? JSONDecoder().decode(ImageIndex.self, from: Data(indexBytes)) else {
            throw LayoutError(reason: "\(root)/index.json is not an OCI image index")
        }
        guard
            let entry = index.manifests.first(where: {
                $0.artifactType == CacheLayout.artifactType && $0.mediaType == MediaType.imageManifest
            })
        else {
            throw LayoutError(reason: "\(root)/index.json names no hermetic build cache (\(CacheLayout.artifactType))")
        }
        let manifestBytes = try readBlob(root, entry, limit: CacheLayout.maximumManifestSize)
        guard let manifest = try? JSONDecoder().decode(ImageManifest.self, from: Data(manifestBytes)),
            manifest.config.mediaType == CacheLayout.configMediaType
        else {
            throw LayoutError(reason: "blob \(entry.digest) is not a hermetic build cache manifest")
        }
        let configBytes = try readBlob(root, manifest.config, limit: CacheLayout.maximumConfigSize)
        guard let config = try? JSONDecoder().decode(CacheLayout.Config.self, from: Data(configBytes)) else {
            throw LayoutError(reason: "blob \(manifest.config.digest) is not a list of cached steps")
        }
        guard config.format == 1 else {
            throw LayoutError(reason: "cache format \(config.format) is not one this builder reads (1)")
        }
        return config.steps
    }

    private func readJSON(_ path: String, limit: Int) throws -> [UInt8] {
        do {
            return try FileSystem.readFile(path, limit: limit, followSymlinks: false)
        } catch let error as SystemError where error.errno == EFBIG {
            throw LayoutError(reason: "\(path) is larger than \(limit) bytes")
        } catch let error as SystemError where error.errno == ELOOP {
            throw LayoutError(reason: "\(path) is a symlink")
        }
    }

    /// A JSON blob the layout names, checked against its descriptor's size and digest.
    private func readBlob(_ root: String, _ descriptor: Descriptor, limit: Int) throws -> [UInt8] {
        guard descriptor.digest.algorithm == .sha256, descriptor.size >= 0, descriptor.size <= Int64(limit) else {
            throw LayoutError(reason: "blob \(descriptor.digest) is larger than \(limit) bytes or not sha256")
        }
        let bytes = try readJSON(root + "/blobs/sha256/" + descriptor.digest.hex, limit: limit)
        let found = Digest.sha256(of: bytes)
        guard found == descriptor.digest, Int64(bytes.count) == descriptor.size else {
            throw LayoutError(reason: "blob \(descriptor.digest) has digest \(found) and \(bytes.count) bytes")
        }
        return bytes
    }

    /// Copies a layer tar into the store's `tmp/`, checked against its diff_id, and moves it in.
    private func importBlob(_ root: String, digest: Digest, size: Int64) throws {
        guard digest.algorithm == .sha256, size >= 0 else {
            throw CacheBlobError(path: root, reason: "layer \(digest) is not a sha256 blob of a size")
        }
        let temporary = try FileSystem.makeTemporaryDirectory(in: store.temporaryDirectory, prefix: "import-")
        defer { FileSystem.removeTree(temporary) }
        let copy = temporary + "/blob"
        try CacheBlobCopy.copy(root + "/blobs/sha256/" + digest.hex, to: copy, digest: digest, size: size)
        _ = try store.adopt(fileAt: copy, as: digest)
    }
}
