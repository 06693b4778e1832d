// Store/ — the build cache in a registry (`--cache-to type=registry`, `--cache-from type=registry`): the
// manifest, config and layer tars of a cache layout (CacheLayout.swift), pushed to and pulled from a
// repository through the distribution API.

import AsyncHTTPClient
import Foundation
import NIOCore
import Provenance

/// Pushes a cache manifest to `REPO:TAG` in the order that leaves the previous tag as it was until
/// everything it names is there: each layer tar (several at once, as an image push sends them) and the
/// config unless the registry has it (`HEAD`), the
/// manifest by digest, the tag last. A layer tar is sent from the store as it is (the registry checks its
/// digest); when its upload fails and the store's copy is not its digest, that is the error
/// (`CacheBlobError`), for the way out a damaged store has.
struct CacheRegistryWriter {
    var store: ContentStore
    var client: RegistryClient

    struct Pushed {
        var blobs: Int
        var uploaded: Int
    }

    func push(_ cache: CacheManifest, to reference: RegistryReference) async throws -> Pushed {
        let pusher = RegistryPusher(client: client, reference: reference)
        let store = store
        var uploaded = try await RegistryPusher.concurrently(cache.layers) { layer in
            let path = store.blobPath(layer.digest)
            do {
                return try await pusher.pushBlob(layer, from: .file(path))
            } catch {
                let found = try? ContextDigest.fileDigest(path)
                guard let found, found != layer.digest else { throw error }
                throw CacheBlobError(path: path, reason: "its bytes have digest \(found), not \(layer.digest)")
            }
        }
        if try await pusher.pushBlob(cache.configDescriptor, from: .bytes(cache.config)) { uploaded += 1 }
        try await pusher.pushManifest(
            cache.manifest, mediaType: MediaType.imageManifest, as: cache.descriptor.digest.description)
        try await pusher.pushManifest(cache.manifest, mediaType: MediaType.imageManifest, as: reference.tag ?? "latest")
        return Pushed(blobs: cache.layers.count + 1, uploaded: uploaded)
    }
}

/// Reads a cache from a registry into the store: the manifest the tag (or digest) names, at most 4 MiB and
/// refused unless it is a hermetic build cache; its config; and only the layer tars the store lacks, each
/// hashed while it streams into the store's `tmp/` and moved in only when it is its digest and size. Each
/// cached step whose layer is then in the store becomes a cached step of the store. Nothing here stops the
/// build: what cannot be used is one warning line naming the cache (and the registry's host).
struct CacheRegistryReader {
    var store: ContentStore
    var client: RegistryClient
    var warn: (String) -> Void
    /// How many layer tars download at once.
    var parallelDownloads = 3

    /// Imports what can be used from `reference`; returns how many steps it made available. `name` is how
    /// the flag named it (`type=registry,ref=…`).
    @discardableResult
    func importCache(from reference: RegistryReference, name: String) async -> Int {
        let label = "--cache-from \(name)"
        let steps: [CacheLayout.Config.Step]
        let layers: [Digest: Descriptor]
        do {
            (steps, layers) = try await readSteps(reference)
        } catch {
            // As BuildKit: a cache that cannot be read (missing, unreachable, not a cache) is not used.
            warn("\(label): \(error); no cache imported")
            return 0
        }
        var imported = 0
        var pending: [(entry: CacheLayout.Config.Step, layer: Digest?)] = []
        var missing: [Descriptor] = []
        for entry in steps {
            // The store's own record of a key is kept: it gives the same result (the key says so).
            if store.step(CacheKey(digest: entry.key)) != nil {
                imported += 1
                continue
            }
            guard let layer = entry.step.layer else {
                pending.append((entry, nil))
                continue
            }
            guard let listed = layers[layer.diffID], listed.size == layer.size else {
                warn("\(label): cached step \(entry.key) skipped: its layer \(layer.diffID) is not in the manifest")
                continue
            }
            pending.append((entry, listed.digest))
            if !store.hasBlob(listed.digest) && !missing.contains(listed) { missing.append(listed) }
        }
        let failures = await fetchLayers(missing, from: reference)
        for (entry, layer) in pending {
            if let layer, let failure = failures[layer] {
                warn("\(label): cached step \(entry.key) skipped: \(failure)")
                continue
            }
            do {
                try store.storeStep(entry.step, for: CacheKey(digest: entry.key))
                imported += 1
            } catch {
                warn("\(label): cached step \(entry.key) skipped: \(error)")
            }
        }
        return imported
    }

    /// The manifest, checked to be a hermetic build cache; its config, fetched into the store and read
    /// back; the steps it lists and the layers the manifest names (by digest).
    private func readSteps(_ reference: RegistryReference) async throws
        -> ([CacheLayout.Config.Step], [Digest: Descriptor])
    {
        let (bytes, subject) = try await fetchManifest(reference)
        func refuse(_ reason: String) -> RegistryError {
            RegistryError(host: reference.registry, subject: subject, reason: reason)
        }
        struct Probe: Decodable {
            var mediaType: String?
            var artifactType: String?
        }
        guard let probe = try? JSONDecoding.decode(Probe.self, from: bytes) else {
            throw refuse("not a manifest (invalid JSON)")
        }
        guard probe.artifactType == CacheLayout.artifactType,
            probe.mediaType == nil || probe.mediaType == MediaType.imageManifest,
            let manifest = try? JSONDecoding.decode(ImageManifest.self, from: bytes),
            manifest.config.mediaType == CacheLayout.configMediaType
        else {
            let what =
                probe.artifactType.map { "artifactType \"\($0)\"" } ?? "media type \"\(probe.mediaType ?? "none")\""
            throw refuse("not a hermetic build cache (\(what), not \(CacheLayout.artifactType))")
        }
        let config = manifest.config
        guard config.digest.algorithm == .sha256, config.size >= 0, config.size <= Int64(CacheLayout.maximumConfigSize)
        else {
            throw refuse(
                "its config \(config.digest) is larger than \(CacheLayout.maximumConfigSize) bytes or not sha256")
        }
        try await RegistryPuller(client: client, store: store).fetchBlob(reference, config)
        let configBytes = try FileSystem.readFile(store.blobPath(config.digest), limit: CacheLayout.maximumConfigSize)
        guard let decoded = try? JSONDecoding.decode(CacheLayout.Config.self, from: configBytes) else {
            throw refuse("its config \(config.digest) is not a list of cached steps")
        }
        guard decoded.format == 1 else {
            throw refuse("cache format \(decoded.format) is not one this builder reads (1)")
        }
        var layers: [Digest: Descriptor] = [:]
        for layer in manifest.layers where layer.digest.algorithm == .sha256 && layer.size >= 0 {
            layers[layer.digest] = layer
        }
        return (decoded.steps, layers)
    }

    /// The manifest `REPO:TAG` (or `REPO@DIGEST`) names, in memory: at most 4 MiB, and its bytes must be
    /// the digest asked for, or the one the registry says it sent (`Docker-Content-Digest`).
    private func fetchManifest(_ reference: RegistryReference) async throws -> (bytes: [UInt8], subject: String) {
        let target = reference.digest?.description ?? reference.tag ?? "latest"
        let subject = reference.repository + (reference.digest == nil ? ":" : "@") + target
        let bytes = try await client.withRetries {
            let response = try await client.get(
                reference, path: "\(reference.repository)/manifests/\(target)", accept: RegistryPuller.manifestTypes,
                subject: subject)
            let body: ByteBuffer
            do {
                body = try await response.body.collect(upTo: CacheLayout.maximumManifestSize)
            } catch is NIOTooManyBytesError {
                throw RegistryError(
                    host: reference.registry, subject: subject, reason: "a manifest over 4 MiB is refused")
            } catch {
                throw client.transportError(error, host: reference.registry, subject: subject)
            }
            let bytes = Array(body.readableBytesView)
            let found = Digest.sha256(of: bytes)
            if let claimed = reference.digest?.description ?? response.headers.first(name: "Docker-Content-Digest"),
                claimed != found.description
            {
                throw RegistryError(
                    host: reference.registry, subject: subject,
                    reason: "content does not match its digest \(claimed) (it hashes to \(found))")
            }
            return bytes
        }
        return (bytes, subject)
    }

    /// Fetches `layers` into the store, `parallelDownloads` at a time; returns why each that failed did.
    private func fetchLayers(_ layers: [Descriptor], from reference: RegistryReference) async -> [Digest: String] {
        let puller = RegistryPuller(client: client, store: store)
        @Sendable func fetch(_ layer: Descriptor) async -> (Digest, String?) {
            do {
                try await puller.fetchBlob(reference, layer)
                return (layer.digest, nil)
            } catch {
                return (layer.digest, "\(error)")
            }
        }
        return await withTaskGroup(of: (Digest, String?).self) { group in
            var failures: [Digest: String] = [:]
            var waiting = layers[...]
            for layer in waiting.prefix(parallelDownloads) { group.addTask { await fetch(layer) } }
            waiting = waiting.dropFirst(parallelDownloads)
            while let (digest, failure) = await group.next() {
                if let failure { failures[digest] = failure }
                if let layer = waiting.popFirst() { group.addTask { await fetch(layer) } }
            }
            return failures
        }
    }
}
