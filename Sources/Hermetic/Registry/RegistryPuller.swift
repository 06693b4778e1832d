import AsyncHTTPClient
import Foundation
import NIOCore
import Provenance

#if canImport(Glibc)
    import Glibc
#endif

/// Pulls one image by digest into the content store, for the platforms a build asks of it: the pinned
/// manifest or index, the manifest each platform takes from an index (containerd's ranking, as a layout's),
/// and their configs and layers. Every body is hashed while it streams into the store's `tmp/` and renamed
/// to its digest only when its size and digest match; nothing unverified is ever stored. Foreign layers are
/// fetched from the registry like any other blob: their `urls` are never fetched.
public struct RegistryPuller: Sendable {
    public let client: RegistryClient
    public let store: ContentStore
    /// How many layers download at once.
    public var parallelDownloads = 3

    static let maximumManifestSize: Int64 = 4 << 20
    static let manifestTypes = [
        MediaType.imageIndex, MediaType.imageManifest, MediaType.dockerManifestList, MediaType.dockerManifest,
    ]

    public init(client: RegistryClient, store: ContentStore) {
        self.client = client
        self.store = store
    }

    /// A pulled image: the descriptor of what the digest names (an index or a manifest).
    public struct Pulled: Sendable {
        public var top: Descriptor
    }

    /// Pulls `reference` (which must carry a digest) for each of `platforms`.
    public func pull(_ reference: RegistryReference, platforms: [Platform]) async throws -> Pulled {
        guard let digest = reference.digest else {
            throw RegistryError(host: reference.registry, subject: reference.repository, reason: "not pinned by digest")
        }
        let top = try await fetchManifest(reference, digest: digest, expected: nil)
        var manifests: [(descriptor: Descriptor, platforms: [Platform])] = []
        for platform in platforms {
            let chosen = try await choose(top, for: platform, reference: reference)
            if let known = manifests.firstIndex(where: { $0.descriptor == chosen }) {
                manifests[known].platforms.append(platform)
            } else {
                manifests.append((chosen, [platform]))
            }
        }
        var layers: [Descriptor] = []
        var configs: [Descriptor] = []
        for (descriptor, wanted) in manifests {
            let manifest: ImageManifest = try decode(descriptor, reference: reference)
            guard manifest.schemaVersion == 2 else {
                throw RegistryError(
                    host: reference.registry, subject: subject(reference, descriptor.digest),
                    reason: "manifest schemaVersion must be 2")
            }
            guard manifest.config.size <= Self.maximumManifestSize else {
                throw RegistryError(
                    host: reference.registry, subject: subject(reference, manifest.config.digest),
                    reason: "a config over 4 MiB is refused")
            }
            try await fetchBlob(reference, manifest.config)
            configs.append(manifest.config)
            // The content must be the platform asked for, whatever its index says (as for a layout).
            let config: ImageConfig = try decode(manifest.config, reference: reference)
            let content = Platform(os: config.os, architecture: config.architecture, variant: config.variant)
            if let platform = wanted.first(where: { !content.serves($0) }) {
                throw RegistryError(
                    host: reference.registry, subject: subject(reference, descriptor.digest),
                    reason: "the image is \(content.normalized), not the requested \(platform)")
            }
            layers += manifest.layers.filter { layer in !layers.contains(layer) }
        }
        try await fetchLayers(reference, layers)
        // Where each blob came from, for a push to this registry to mount it (SPEC §1.2). Only a hint:
        // a record that cannot be written costs an upload, not the build.
        for blob in configs + layers {
            try? store.recordSource(of: blob.digest, registry: reference.registry, repository: reference.repository)
        }
        return Pulled(top: top)
    }

    /// Writes an OCI layout at `path` whose index.json names `top` and whose blobs are the store's (a
    /// symlink), for the layout reader to take like any other; the reader checks every blob again.
    public func writeLayout(at path: String, top: Descriptor) throws {
        try FileSystem.makeDirectories(path, mode: 0o700)
        try FileSystem.writeAtomically(Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: path + "/oci-layout")
        var entry = Descriptor(mediaType: top.mediaType, digest: top.digest, size: top.size)
        entry.platform = nil
        try FileSystem.writeAtomically(
            try CanonicalJSON.encode(ImageIndex(manifests: [entry])), to: path + "/index.json")
        guard symlink(store.root + "/blobs", path + "/blobs") == 0 else {
            throw SystemError("symlink", path: path + "/blobs", errno: errno)
        }
    }

    // MARK: Manifests

    /// Descends from `top` through indexes to the manifest that best serves `platform` (the first of
    /// equals), fetching each; a platform no entry serves names what the index has.
    private func choose(_ top: Descriptor, for platform: Platform, reference: RegistryReference) async throws
        -> Descriptor
    {
        var current = top
        var depth = 0
        while MediaType.isIndex(current.mediaType) {
            depth += 1
            guard depth <= 8 else {
                throw RegistryError(
                    host: reference.registry, subject: subject(reference, current.digest),
                    reason: "image indexes nest too deep")
            }
            let index: ImageIndex = try decode(current, reference: reference)
            let candidates = index.manifests.compactMap { descriptor in
                descriptor.platform.flatMap { $0.serves(platform) ? (descriptor, $0.rank(serving: platform)) : nil }
            }
            guard let chosen = candidates.min(by: { $0.1 < $1.1 })?.0 else {
                let available = index.manifests.compactMap { $0.platform?.normalized }.filter { $0.os != "unknown" }
                let listed =
                    available.isEmpty ? "none names a platform" : available.map(\.description).joined(separator: ", ")
                throw RegistryError(
                    host: reference.registry, subject: subject(reference, current.digest),
                    reason: "the image index has no image for \(platform) (it has \(listed))")
            }
            guard Self.manifestTypes.contains(chosen.mediaType), chosen.size <= Self.maximumManifestSize else {
                throw RegistryError(
                    host: reference.registry, subject: subject(reference, chosen.digest),
                    reason: chosen.size > Self.maximumManifestSize
                        ? "a manifest over 4 MiB is refused" : "unsupported media type \"\(chosen.mediaType)\"")
            }
            current = try await fetchManifest(reference, digest: chosen.digest, expected: chosen)
        }
        return current
    }

    /// Fetches a manifest or index by digest into the store; its media type is the response's
    /// Content-Type, else the JSON's `mediaType`. `expected` (from an index) fixes size and type.
    private func fetchManifest(_ reference: RegistryReference, digest: Digest, expected: Descriptor?) async throws
        -> Descriptor
    {
        let what = subject(reference, digest)
        return try await client.withRetries {
            let response = try await client.get(
                reference, path: "\(reference.repository)/manifests/\(digest)", accept: Self.manifestTypes,
                subject: what)
            let limit = expected?.size ?? Self.maximumManifestSize
            let size = try await streamIntoStore(
                response, into: try PartialDownload(store: store, digest: digest), digest: digest,
                size: expected?.size, limit: limit, host: reference.registry, subject: what)
            if let expected { return expected }
            let contentType = response.headers.first(name: "Content-Type").map {
                String($0.split(separator: ";")[0]).trimmingCharacters(in: .whitespaces)
            }
            let mediaType = try detectMediaType(digest: digest, contentType: contentType, reference: reference)
            return Descriptor(mediaType: mediaType, digest: digest, size: size)
        }
    }

    private func detectMediaType(digest: Digest, contentType: String?, reference: RegistryReference) throws -> String {
        struct Probe: Decodable {
            var mediaType: String?
            var manifests: [Descriptor]?
            var layers: [Descriptor]?
        }
        let bytes = try FileSystem.readFile(store.blobPath(digest), limit: Int(Self.maximumManifestSize))
        let probe = try? JSONDecoder().decode(Probe.self, from: Data(bytes))
        if let type = probe?.mediaType, Self.manifestTypes.contains(type) { return type }
        if let contentType, Self.manifestTypes.contains(contentType) { return contentType }
        if probe?.manifests != nil { return MediaType.imageIndex }
        if probe?.layers != nil { return MediaType.imageManifest }
        throw RegistryError(
            host: reference.registry, subject: subject(reference, digest),
            reason: "not an image manifest or index (media type \"\(probe?.mediaType ?? contentType ?? "none")\")")
    }

    private func decode<T: Decodable>(_ descriptor: Descriptor, reference: RegistryReference) throws -> T {
        let bytes = try FileSystem.readFile(store.blobPath(descriptor.digest), limit: Int(Self.maximumManifestSize))
        do {
            return try JSONDecoding.decode(T.self, from: bytes)
        } catch {
            throw RegistryError(
                host: reference.registry, subject: subject(reference, descriptor.digest),
                reason: "invalid JSON: \(OCILayoutReader.brief(error))")
        }
    }

    // MARK: Blobs

    private func fetchLayers(_ reference: RegistryReference, _ layers: [Descriptor]) async throws {
        let missing = layers.filter { !store.hasBlob($0.digest) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            while next < missing.count && next < parallelDownloads {
                let layer = missing[next]
                group.addTask { try await fetchBlob(reference, layer) }
                next += 1
            }
            while try await group.next() != nil {
                if next < missing.count {
                    let layer = missing[next]
                    group.addTask { try await fetchBlob(reference, layer) }
                    next += 1
                }
            }
        }
    }

    /// Fetches a blob into the store unless it is there; verified against the descriptor.
    func fetchBlob(_ reference: RegistryReference, _ descriptor: Descriptor) async throws {
        if store.hasBlob(descriptor.digest) { return }
        let foreign = descriptor.mediaType == MediaType.dockerForeignLayerGzip || !(descriptor.urls ?? []).isEmpty
        let what = (foreign ? "foreign layer " : "blob ") + subject(reference, descriptor.digest)
        // Kept across tries: a body cut short is resumed where it stopped, where the registry takes Range.
        let partial = try PartialDownload(store: store, digest: descriptor.digest)
        do {
            try await client.withRetries {
                let response = try await client.get(
                    reference, path: "\(reference.repository)/blobs/\(descriptor.digest)", accept: ["*/*"],
                    subject: what, resumingAt: partial.count > 0 ? partial.count : nil)
                _ = try await streamIntoStore(
                    response, into: partial, digest: descriptor.digest, size: descriptor.size,
                    limit: descriptor.size, host: reference.registry, subject: what)
            }
        } catch var error as RegistryError where foreign && error.reason.hasPrefix("not found") {
            error.reason += "; the URLs a foreign layer names are never fetched"
            throw error
        }
    }

    /// Streams a response body into `partial`, hashing it: after what it holds when the answer is a 206
    /// that continues there, else from the start. Moves it into the store as `digest` only when the size
    /// (`size`, when known, and at most `limit`) and the digest match. Returns the size.
    private func streamIntoStore(
        _ response: HTTPClientResponse, into partial: PartialDownload, digest: Digest, size: Int64?, limit: Int64,
        host: String, subject: String
    ) async throws -> Int64 {
        func fail(_ reason: String, retryable: Bool = false) -> RegistryError {
            RegistryError(host: host, subject: subject, reason: reason, retryable: retryable)
        }
        if response.status.code == 206 {
            let range = response.headers.first(name: "Content-Range") ?? ""
            guard partial.count > 0, range.hasPrefix("bytes \(partial.count)-") else {
                try partial.restart()
                throw fail("a partial answer (206, Content-Range \"\(range)\") that does not continue the body")
            }
        } else if partial.count > 0 {
            try partial.restart()
        }
        if let length = response.headers.first(name: "Content-Length").flatMap({ Int64($0) }) {
            if let size, length != size - partial.count {
                throw fail(
                    partial.count == 0
                        ? "the response's Content-Length is \(length), the descriptor's size \(size)"
                        : "the response's Content-Length is \(length), the rest of the body is \(size - partial.count)")
            }
            if length > limit {
                throw fail(
                    limit == Self.maximumManifestSize ? "a manifest over 4 MiB is refused" : "over \(limit) bytes")
            }
        }
        do {
            for try await buffer in response.body {
                guard partial.count + Int64(buffer.readableBytes) <= limit else {
                    throw fail(
                        limit == Self.maximumManifestSize && size == nil
                            ? "a manifest over 4 MiB is refused" : "longer than its descriptor's size \(limit)")
                }
                try buffer.withUnsafeReadableBytes { try partial.append($0) }
            }
        } catch let error as RegistryError {
            throw error
        } catch let error as SystemError {
            throw error
        } catch {
            let timedOut = (error as? HTTPClientError) == .readTimeout
            let why = RegistryClient.describe(error, readTimeout: client.readTimeoutSeconds)
            throw fail(
                timedOut ? why : "the body was cut short after \(partial.count) bytes (\(why))", retryable: !timedOut)
        }
        let total = partial.count
        if let size, total != size {
            throw fail("the body has \(total) bytes, the descriptor says \(size) (truncated)", retryable: total < size)
        }
        let actual = partial.finish()
        guard actual == digest else {
            throw fail("content does not match its digest (it hashes to \(actual))")
        }
        try partial.adopt(into: store, as: digest)
        return total
    }

    private func subject(_ reference: RegistryReference, _ digest: Digest) -> String {
        "\(reference.repository)@\(digest)"
    }
}
