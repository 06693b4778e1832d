import Foundation
import Provenance

extension ImageExporter {
    /// Pushes the image to `reference`'s repository and tag in the order that leaves the previous tag as it
    /// was until everything it names is there: every blob the registry lacks (layers, configs, attestation
    /// blobs), each platform manifest (and BuildKit-form attestation manifest) by digest, then the image
    /// index by digest for several platforms, then each referrer after its subject (and its referrers tag
    /// where the registry has no referrers API), and last the tag.
    func push(_ exported: ExportedImage, to reference: RegistryReference, client: RegistryClient) async throws {
        let pusher = RegistryPusher(client: client, reference: reference)
        await client.willPush(to: reference)
        var seen = Set<Digest>()
        func blob(_ descriptor: Descriptor, _ source: RegistryPusher.BlobSource) async throws {
            guard seen.insert(descriptor.digest).inserted else { return }
            try await pusher.pushBlob(descriptor, from: source)
        }
        func bytesBlob(_ bytes: [UInt8], _ mediaType: String) async throws {
            try await blob(
                Descriptor(mediaType: mediaType, digest: Digest.sha256(of: bytes), size: Int64(bytes.count)),
                .bytes(bytes))
        }
        for image in images {
            for layer in image.layers { try await blob(layer.descriptor, .file(layer.blobPath)) }
            try await bytesBlob(try CanonicalJSON.encode(image.config), MediaType.imageConfig)
        }
        for attestation in exported.attestationBlobs { try await bytesBlob(attestation.bytes, attestation.mediaType) }
        for attestation in exported.attestationManifests {
            try await bytesBlob(attestation.configBytes, MediaType.imageConfig)
        }
        for entry in exported.manifests {
            try await pusher.pushManifest(
                try CanonicalJSON.encode(entry.manifest), mediaType: MediaType.imageManifest,
                as: entry.descriptor.digest.description)
        }
        for attestation in exported.attestationManifests {
            try await pusher.pushManifest(
                try CanonicalJSON.encode(attestation.manifest), mediaType: MediaType.imageManifest,
                as: attestation.descriptor.digest.description)
        }
        let top: [UInt8]
        if MediaType.isIndex(exported.topDescriptor.mediaType) {
            top = try CanonicalJSON.encode(
                ImageIndex(
                    manifests: exported.manifests.map(\.descriptor) + exported.attestationManifests.map(\.descriptor)))
            guard Digest.sha256(of: top) == exported.topDescriptor.digest else {
                throw RegistryError(
                    host: reference.registry, subject: reference.repository,
                    reason: "internal: the image index changed while it was pushed")
            }
            try await pusher.pushManifest(
                top, mediaType: MediaType.imageIndex, as: exported.topDescriptor.digest.description)
        } else {
            top = try CanonicalJSON.encode(exported.manifests[0].manifest)
        }
        for referrer in exported.referrers {
            let listedByRegistry = try await pusher.pushManifest(
                try CanonicalJSON.encode(referrer.manifest), mediaType: MediaType.imageManifest,
                as: referrer.descriptor.digest.description)
            guard !listedByRegistry, let subject = referrer.manifest.subject else { continue }
            // The spec's referrers list entry: the artifactType and the manifest's own annotations.
            var entry = Descriptor(
                mediaType: MediaType.imageManifest, digest: referrer.descriptor.digest, size: referrer.descriptor.size)
            entry.artifactType = referrer.manifest.artifactType ?? referrer.manifest.config.mediaType
            entry.annotations = referrer.manifest.annotations
            try await pusher.addReferrer(entry, to: subject.digest)
        }
        try await pusher.pushManifest(
            top, mediaType: exported.topDescriptor.mediaType, as: reference.tag ?? "latest")
    }
}

/// `-o type=image,push=true` / `type=registry` / `--push`: the built image pushed to each name, after the
/// build and before the local outputs are put in place (a push that fails leaves them unwritten).
struct RegistryPush {
    var targets: [RegistryReference]
    var transport: RegistryTransportPolicy
    var environment: [String: String]

    func run(_ exported: ExportedImage, exporter: ImageExporter) async throws {
        guard !targets.isEmpty else { return }
        let credentials: DockerCredentialStore
        do {
            credentials = try DockerCredentialStore(environment: environment)
        } catch let error as DockerCredentialStore.ConfigError {
            throw RegistryError(host: targets[0].registry, subject: "", reason: "credentials: \(error)")
        }
        let timeout = environment["HERMETIC_REGISTRY_TIMEOUT"].flatMap { Int64($0) }.flatMap { $0 > 0 ? $0 : nil }
        let client = try RegistryClient(policy: transport, credentials: credentials, readTimeoutSeconds: timeout ?? 60)
        do {
            for target in targets {
                try await exporter.push(exported, to: target, client: client)
            }
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
    }
}
