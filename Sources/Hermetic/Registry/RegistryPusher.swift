import AsyncHTTPClient
import Foundation
import NIOCore
import Provenance

/// Pushes blobs and manifests to one repository: a blob only when `HEAD` says the registry lacks it,
/// mounted from another repository of the registry where one is known to hold it, else uploaded
/// (`RegistryPusher+Upload.swift`); a manifest with a `PUT` by digest or tag. A manifest with a `subject`
/// is listed in its subject's referrers: by the registry itself where it has the referrers API (it answers
/// with `OCI-Subject`), else through the referrers tag schema of the distribution spec 1.1
/// (`sha256-<hex>`, an image index of the referrers).
public struct RegistryPusher: Sendable {
    public let client: RegistryClient
    public let reference: RegistryReference

    public init(client: RegistryClient, reference: RegistryReference) {
        self.client = client
        self.reference = reference
    }

    /// Where a blob's bytes come from.
    enum BlobSource: Sendable {
        case file(String)
        case bytes([UInt8])
    }

    /// Whether the registry has the blob (`HEAD …/blobs/DIGEST` answers 200, or redirects to its storage).
    func hasBlob(_ digest: Digest) async throws -> Bool {
        let what = "blob \(reference.repository)@\(digest)"
        return try await client.withRetries {
            let response = try await client.send(
                .HEAD, reference, target: "\(reference.repository)/blobs/\(digest)", subject: what)
            switch response.status.code {
            case 200, 307, 302, 303, 308: return true
            case 404: return false
            default: throw await RegistryClient.unexpected(response, host: reference.registry, subject: what)
            }
        }
    }

    /// Uploads the blob unless the registry has it; returns whether it was uploaded (or mounted).
    /// `mountFrom`: another repository of this registry that holds it (a base image's layer pulled from
    /// there), asked to mount it first (SPEC §1.2).
    @discardableResult
    func pushBlob(_ descriptor: Descriptor, from source: BlobSource, mountFrom: String? = nil) async throws -> Bool {
        if try await hasBlob(descriptor.digest) { return false }
        let what = "blob \(reference.repository)@\(descriptor.digest)"
        try await client.withRetries {
            guard
                case .session(let location, let minimumChunk) = try await startUpload(
                    descriptor, mountFrom: mountFrom == reference.repository ? nil : mountFrom, subject: what)
            else { return }
            let chunk = max(Self.chunkSize, minimumChunk ?? 0)
            if descriptor.size > chunk {
                try await uploadInChunks(descriptor, from: source, to: location, chunk: chunk, subject: what)
            } else {
                try await uploadWhole(descriptor, from: source, to: location, subject: what)
            }
        }
        return true
    }

    /// `PUT …/manifests/TAG_OR_DIGEST`; returns whether the registry took note of its `subject` itself
    /// (it answered with an `OCI-Subject` header: it has the referrers API).
    @discardableResult
    func pushManifest(_ bytes: [UInt8], mediaType: String, as tagOrDigest: String) async throws -> Bool {
        let what = "manifest \(reference.repository):\(tagOrDigest)"
        return try await client.withRetries {
            let response = try await client.send(
                .PUT, reference, target: "\(reference.repository)/manifests/\(tagOrDigest)",
                headers: [("Content-Type", mediaType)], body: { .bytes(bytes) }, subject: what)
            guard response.status.code == 201 else {
                throw await RegistryClient.unexpected(response, host: reference.registry, subject: what)
            }
            await RegistryClient.discard(response)
            return response.headers.first(name: "OCI-Subject") != nil
        }
    }

    /// The referrers tag of `subject`: `sha256-<hex>` (the distribution spec's `<alg>-<ref>`).
    static func referrersTag(_ subject: Digest) -> String {
        subject.description.replacingOccurrences(of: ":", with: "-")
    }

    /// Adds `referrer` (a manifest's descriptor, with its `artifactType` and its manifest's annotations) to
    /// the image index the referrers tag of `subject` holds, or to a new one; a descriptor already listed
    /// is not listed twice. Refuses to replace what is there when it is not an image index.
    func addReferrer(_ referrer: Descriptor, to subject: Digest) async throws {
        let tag = Self.referrersTag(subject)
        let what = "referrers tag \(reference.repository):\(tag)"
        var index = ImageIndex(manifests: [])
        let response = try await client.withRetries {
            try await client.send(
                .GET, reference, target: "\(reference.repository)/manifests/\(tag)",
                headers: [("Accept", MediaType.imageIndex)], subject: what)
        }
        switch response.status.code {
        case 404:
            await RegistryClient.discard(response)
        case 200:
            let body: ByteBuffer
            do {
                body = try await response.body.collect(upTo: 4 << 20)
            } catch {
                throw RegistryError(host: reference.registry, subject: what, reason: "cannot read it (\(error))")
            }
            guard let existing = try? JSONDecoding.decode(ImageIndex.self, from: Array(body.readableBytesView)),
                existing.mediaType == nil || existing.mediaType == MediaType.imageIndex
            else {
                throw RegistryError(
                    host: reference.registry, subject: what,
                    reason: "holds something other than an OCI image index; it is left as it is")
            }
            index = existing
        default:
            throw await RegistryClient.unexpected(response, host: reference.registry, subject: what)
        }
        guard !index.manifests.contains(where: { $0.digest == referrer.digest }) else { return }
        index.manifests.append(referrer)
        try await pushManifest(try CanonicalJSON.encode(index), mediaType: MediaType.imageIndex, as: tag)
    }

    /// How many blobs go up at once: dockerd's default `max-concurrent-uploads`.
    static let concurrentUploads = 5

    /// Runs `upload` on each item, at most `limit` at once; the first failure stops the rest. Returns how
    /// many uploads answered true (sent, rather than found or mounted).
    @discardableResult
    static func concurrently<Item: Sendable>(
        _ items: [Item], limit: Int = concurrentUploads, _ upload: @escaping @Sendable (Item) async throws -> Bool
    ) async throws -> Int {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            var next = items.makeIterator()
            var sent = 0
            for _ in 0..<max(1, limit) {
                guard let item = next.next() else { break }
                group.addTask { try await upload(item) }
            }
            while let uploaded = try await group.next() {
                if uploaded { sent += 1 }
                guard let item = next.next() else { continue }
                group.addTask { try await upload(item) }
            }
            return sent
        }
    }
}
