import Foundation
import Provenance

extension ImageExporter {
    /// Pushes the image to `reference`'s repository and tag in the order that leaves the previous tag as it
    /// was until everything it names is there: every blob the registry lacks (layers, configs, attestation
    /// blobs), each platform manifest (and BuildKit-form attestation manifest) by digest, then the image
    /// index by digest for several platforms, then each referrer after its subject (and its referrers tag
    /// where the registry has no referrers API), and last the tag.
    /// `sources`: the store whose records say which repositories of a registry a blob was pulled from or
    /// pushed to; a blob the target registry holds in another repository is mounted from the first of
    /// them, and a store blob pushed is recorded as held by the target (the next repository mounts it).
    func push(
        _ exported: ExportedImage, to reference: RegistryReference, client: RegistryClient,
        sources: ContentStore? = nil
    ) async throws {
        let pusher = RegistryPusher(client: client, reference: reference)
        await client.willPush(to: reference)
        var blobs: [(Descriptor, RegistryPusher.BlobSource)] = []
        var seen = Set<Digest>()
        func blob(_ descriptor: Descriptor, _ source: RegistryPusher.BlobSource) {
            if seen.insert(descriptor.digest).inserted { blobs.append((descriptor, source)) }
        }
        func bytesBlob(_ bytes: [UInt8], _ mediaType: String) {
            blob(
                Descriptor(mediaType: mediaType, digest: Digest.sha256(of: bytes), size: Int64(bytes.count)),
                .bytes(bytes))
        }
        for image in images {
            for layer in image.layers { blob(layer.descriptor, .file(layer.blobPath)) }
            bytesBlob(try CanonicalJSON.encode(image.config), MediaType.imageConfig)
        }
        for attestation in exported.attestationBlobs { bytesBlob(attestation.bytes, attestation.mediaType) }
        for attestation in exported.attestationManifests { bytesBlob(attestation.configBytes, MediaType.imageConfig) }
        try await Self.pushBlobs(blobs, with: pusher, sources: sources)
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

    /// Uploads the blobs the registry lacks, `RegistryPusher.concurrentUploads` at once (a push waits on
    /// the registry far more than on its CPU); the first failure stops the rest.
    private static func pushBlobs(
        _ blobs: [(Descriptor, RegistryPusher.BlobSource)], with pusher: RegistryPusher, sources: ContentStore?
    ) async throws {
        let reference = pusher.reference
        try await RegistryPusher.concurrently(blobs) { descriptor, source in
            let mountFrom = sources?.sourceRepositories(of: descriptor.digest, registry: reference.registry)
                .first { $0 != reference.repository }
            let uploaded = try await pusher.pushBlob(descriptor, from: source, mountFrom: mountFrom)
            if let sources, sources.hasBlob(descriptor.digest) {
                try? sources.recordSource(
                    of: descriptor.digest, registry: reference.registry, repository: reference.repository)
            }
            return uploaded
        }
    }
}

/// `-o type=image,push=true` / `type=registry` / `--push`: the built image pushed to each name, after the
/// build and before the local outputs are put in place (a push that fails leaves them unwritten).
struct RegistryPush {
    var targets: [RegistryReference]
    var transport: RegistryTransportPolicy
    var environment: [String: String]
    /// The build's store: where its pulled blobs came from (blob mounts).
    var store: ContentStore? = nil

    func run(_ exported: ExportedImage, exporter: ImageExporter) async throws {
        guard !targets.isEmpty else { return }
        let client = try RegistryAccess(transport: transport, environment: environment).makeClient(
            registry: targets[0].registry)
        do {
            for target in targets {
                try await exporter.push(exported, to: target, client: client, sources: store)
            }
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
    }
}
