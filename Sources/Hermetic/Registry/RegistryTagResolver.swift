import AsyncHTTPClient
import Foundation
import NIOCore

/// `hermetic lock`'s question to a registry: which digest does a tag name now? The manifest or index the
/// tag names is fetched (at most 4 MiB, kept in memory only) and hashed; the answer is that digest, once
/// it is shown to serve every platform asked for (an index entry chosen as a build chooses it, or a
/// manifest whose config is the platform).
public struct RegistryTagResolver: Sendable {
    public let client: RegistryClient

    public init(client: RegistryClient) {
        self.client = client
    }

    public func resolve(_ reference: RegistryReference, platforms: [Platform]) async throws -> Digest {
        let tag = reference.tag ?? "latest"
        let (bytes, contentType) = try await fetch(reference, path: "manifests/\(tag)", subject: ":\(tag)")
        let digest = Digest.sha256(of: bytes)
        struct Probe: Decodable {
            var mediaType: String?
            var manifests: [Descriptor]?
            var config: Descriptor?
        }
        guard let probe = try? JSONDecoding.decode(Probe.self, from: bytes) else {
            throw RegistryError(
                host: reference.registry, subject: "\(reference.repository):\(tag)",
                reason: "not a manifest (invalid JSON)")
        }
        if let manifests = probe.manifests {
            for platform in platforms {
                let serving = manifests.contains { $0.platform?.serves(platform) == true }
                guard serving else {
                    let available = manifests.compactMap { $0.platform?.normalized }.filter { $0.os != "unknown" }
                    throw RegistryError(
                        host: reference.registry, subject: "\(reference.repository):\(tag)",
                        reason: "the image index has no image for \(platform) (it has "
                            + (available.isEmpty ? "none" : available.map(\.description).joined(separator: ", ")) + ")")
                }
            }
        } else if let config = probe.config {
            let (configBytes, _) = try await fetch(
                reference, path: "blobs/\(config.digest)", subject: "@\(config.digest)", expected: config)
            let image = try JSONDecoding.decode(ImageConfig.self, from: configBytes)
            let content = Platform(os: image.os, architecture: image.architecture, variant: image.variant)
            if let platform = platforms.first(where: { !content.serves($0) }) {
                throw RegistryError(
                    host: reference.registry, subject: "\(reference.repository):\(tag)",
                    reason: "the image is \(content.normalized), not the requested \(platform)")
            }
        } else {
            throw RegistryError(
                host: reference.registry, subject: "\(reference.repository):\(tag)",
                reason: "not an image manifest or index (media type \"\(probe.mediaType ?? contentType ?? "none")\")")
        }
        return digest
    }

    /// A body of at most 4 MiB, in memory; checked against `expected`'s size and digest when given.
    private func fetch(_ reference: RegistryReference, path: String, subject: String, expected: Descriptor? = nil)
        async throws -> ([UInt8], String?)
    {
        let what = reference.repository + subject
        return try await client.withRetries {
            let response = try await client.get(
                reference, path: "\(reference.repository)/\(path)", accept: RegistryPuller.manifestTypes,
                subject: what)
            let limit = Int(RegistryPuller.maximumManifestSize)
            let body: ByteBuffer
            do {
                body = try await response.body.collect(upTo: limit)
            } catch let error as NIOTooManyBytesError {
                _ = error
                throw RegistryError(host: reference.registry, subject: what, reason: "a manifest over 4 MiB is refused")
            } catch {
                throw client.transportError(error, host: reference.registry, subject: what)
            }
            let bytes = Array(body.readableBytesView)
            if let expected {
                let actual = Digest.sha256(of: bytes)
                guard Int64(bytes.count) == expected.size, actual == expected.digest else {
                    throw RegistryError(
                        host: reference.registry, subject: what, reason: "content does not match its digest and size")
                }
            }
            let contentType = response.headers.first(name: "Content-Type")
            return (bytes, contentType)
        }
    }
}
