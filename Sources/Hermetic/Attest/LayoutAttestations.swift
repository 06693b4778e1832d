import Provenance

/// The attestations of one image in an OCI layout, in either form `hermetic build` writes (SPEC.md §9,
/// Storage): OCI 1.1 referrers — manifests listed in index.json whose `subject` is one of the image's
/// manifests — or BuildKit's attestation manifests inside the image's index.
struct LayoutAttestations: Sendable {
    enum Form: Sendable { case referrers, buildkit }

    struct Attestation: Sendable {
        var descriptor: Descriptor
        /// The image manifest it describes: a referrer's `subject`, or BuildKit's `vnd.docker.reference.digest`.
        var subject: Digest?
    }

    var reader: OCILayoutReader
    /// The image as index.json names it: its manifest, or the image index of its platforms.
    var top: Descriptor
    var form: Form
    /// The image's entries: its manifest, or every entry of its index but BuildKit's attestation manifests.
    var images: [Descriptor]
    var attestations: [Attestation]
    /// Referrers that carry the run record (the referrers form only; BuildKit's names it in index.json).
    var runRecords: [Attestation] = []
    /// Whether the image's layers are in the layout: not in one fetched from a registry for its
    /// attestations, whose manifests (content-addressed, and subjects of the provenance) name them.
    var imageLayersAtHand = true
    /// Where referrers are listed, as failures name it.
    var referrersPlace = "in index.json"

    /// Finds the attestations of the image `top`: BuildKit's inside its index when there are any, else the
    /// referrers in index.json that name one of its manifests as `subject` (each read and checked).
    static func find(in reader: OCILayoutReader, top: Descriptor) throws -> LayoutAttestations {
        var images = [top]
        if MediaType.isIndex(top.mediaType) {
            let index = try reader.readJSON(top, as: ImageIndex.self)
            let buildkit = index.manifests.filter(isBuildKitAttestation)
            images = index.manifests.filter { !isBuildKitAttestation($0) }
            if !buildkit.isEmpty {
                let attestations = buildkit.map { entry in
                    Attestation(
                        descriptor: entry,
                        subject: entry.annotations?[AttestationAnnotation.referenceDigest].flatMap {
                            try? Digest(parsing: $0)
                        })
                }
                return LayoutAttestations(
                    reader: reader, top: top, form: .buildkit, images: images, attestations: attestations)
            }
        }
        let imageDigests = Set(images.map(\.digest)).union([top.digest])
        var seen = Set<Digest>()
        var attestations: [Attestation] = []
        var runRecords: [Attestation] = []
        for entry in reader.index.manifests
        where MediaType.isManifest(entry.mediaType) && !imageDigests.contains(entry.digest)
            && seen.insert(entry.digest).inserted
        {
            let manifest = try reader.readJSON(entry, as: ImageManifest.self)
            guard let subject = manifest.subject?.digest, imageDigests.contains(subject) else { continue }
            if StoredAttestations.provenanceLayer(of: manifest) != nil {
                attestations.append(Attestation(descriptor: entry, subject: subject))
            } else if statementLayer(of: manifest, predicateType: ProvenanceBuilder.runRecordType) != nil {
                runRecords.append(Attestation(descriptor: entry, subject: subject))
            }
        }
        return LayoutAttestations(
            reader: reader, top: top, form: .referrers, images: images, attestations: attestations,
            runRecords: runRecords)
    }

    /// The layer of an attestation manifest that holds the statement of `predicateType`: its signed envelope
    /// when there is one, else the plain statement (the layer BuildKit's readers take).
    static func statementLayer(of manifest: ImageManifest, predicateType: String) -> Descriptor? {
        let matching = manifest.layers.filter {
            $0.annotations?[AttestationAnnotation.predicateType] == predicateType
        }
        return matching.first(where: { $0.mediaType == MediaType.dsseEnvelope }) ?? matching.first
    }

    /// The run record of the first run-record referrer, if there is one.
    func runRecord(source: String) throws -> DSSEEnvelope? {
        guard let first = runRecords.first else { return nil }
        let manifest = try reader.readJSON(first.descriptor, as: ImageManifest.self)
        guard let layer = Self.statementLayer(of: manifest, predicateType: ProvenanceBuilder.runRecordType) else {
            return nil
        }
        return try StoredAttestations.decodeEnvelopeOrStatement(
            try reader.readBlob(layer, limit: 64 << 20), source: source)
    }

    static func isBuildKitAttestation(_ entry: Descriptor) -> Bool {
        entry.annotations?[AttestationAnnotation.referenceType] == AttestationAnnotation.attestationManifest
    }

    /// The attestations split by the provenance they hold (its payload), in the order first listed; one
    /// that cannot be read stays with the first (where `failures` names it). A registry's referrers pile up,
    /// each push of the same image adding its own; a layout holds one build's.
    func splitByProvenance() -> [LayoutAttestations] {
        var groups: [(payload: [UInt8]?, members: [Attestation])] = []
        for attestation in attestations {
            let payload = try? provenance(of: attestation).payloadBytes()
            if let payload, let known = groups.firstIndex(where: { $0.payload == payload }) {
                groups[known].members.append(attestation)
            } else if payload == nil, !groups.isEmpty {
                groups[0].members.append(attestation)
            } else {
                groups.append((payload, [attestation]))
            }
        }
        return groups.map { group in
            var part = self
            part.attestations = group.members
            return part
        }
    }

    /// The distinct envelopes (a statement and its signatures) the attestations hold, in the order listed:
    /// builders that give the same image from the same inputs sign the same statement, each with its key.
    func envelopes() -> [DSSEEnvelope] {
        var seen = Set<DSSEEnvelope>()
        return attestations.compactMap { attestation in
            guard let envelope = try? provenance(of: attestation), seen.insert(envelope).inserted else { return nil }
            return envelope
        }
    }

    private func provenance(of attestation: Attestation) throws -> DSSEEnvelope {
        let manifest = try reader.readJSON(attestation.descriptor, as: ImageManifest.self)
        guard let layer = StoredAttestations.provenanceLayer(of: manifest) else {
            throw StoredAttestations.ReadError(source: reader.path, reason: "no provenance layer")
        }
        return try StoredAttestations.decodeEnvelopeOrStatement(
            try reader.readBlob(layer, limit: 64 << 20), source: reader.path)
    }

    /// The provenance the first attestation holds: its signed envelope when there is one, else the statement.
    func definition(source: String) throws -> DSSEEnvelope {
        guard let first = attestations.first else {
            throw StoredAttestations.ReadError(
                source: source,
                reason: MediaType.isIndex(top.mediaType)
                    ? "no attestation names the image: its index holds no attestation manifest and no referrer \(referrersPlace) has one of its manifests as subject (built with --provenance false?)"
                    : "no attestation names the image: no referrer \(referrersPlace) has \(top.digest) as subject (built with --provenance false?)"
            )
        }
        let manifest = try reader.readJSON(first.descriptor, as: ImageManifest.self)
        guard let layer = StoredAttestations.provenanceLayer(of: manifest) else {
            throw StoredAttestations.ReadError(
                source: source,
                reason: "the attestation manifest \(first.descriptor.digest) has no SLSA provenance layer")
        }
        return try StoredAttestations.decodeEnvelopeOrStatement(
            try reader.readBlob(layer, limit: 64 << 20), source: source)
    }

    /// Every blob of the image and of its attestations, read through and checked against its digest and
    /// size; every image manifest named by an attestation; and every attestation holding `definition`.
    func failures(definition: DSSEEnvelope, source: String) -> [String] {
        var failures: [String] = []
        func check(_ body: () throws -> Void) {
            do { try body() } catch { failures.append("\(error)") }
        }
        if MediaType.isIndex(top.mediaType) {
            check { _ = try reader.readJSON(top, as: ImageIndex.self) }
        }
        for image in images {
            check {
                guard MediaType.isManifest(image.mediaType) else {
                    throw StoredAttestations.ReadError(
                        source: source, reason: "the image index entry \(image.digest) is not a manifest")
                }
                let manifest = try reader.readJSON(image, as: ImageManifest.self)
                try reader.verifyBlob(manifest.config)
                if imageLayersAtHand {
                    for layer in manifest.layers { try reader.verifyBlob(layer) }
                }
            }
        }
        for attestation in attestations {
            let digest = attestation.descriptor.digest
            check {
                let manifest = try reader.readJSON(attestation.descriptor, as: ImageManifest.self)
                try reader.verifyBlob(manifest.config)
                for layer in manifest.layers { try reader.verifyBlob(layer) }
                guard let layer = StoredAttestations.provenanceLayer(of: manifest) else {
                    throw StoredAttestations.ReadError(
                        source: source, reason: "the attestation manifest \(digest) has no provenance layer")
                }
                let envelope = try StoredAttestations.decodeEnvelopeOrStatement(
                    try reader.readBlob(layer, limit: 64 << 20), source: source)
                if try envelope.payloadBytes() != definition.payloadBytes() {
                    failures.append("the attestation manifest \(digest) holds a different provenance")
                }
            }
        }
        for runRecord in runRecords {
            check {
                let manifest = try reader.readJSON(runRecord.descriptor, as: ImageManifest.self)
                try reader.verifyBlob(manifest.config)
                for layer in manifest.layers { try reader.verifyBlob(layer) }
            }
        }
        let attested = Set(attestations.compactMap(\.subject))
        for image in images where MediaType.isManifest(image.mediaType) && !attested.contains(image.digest) {
            failures.append(
                form == .buildkit
                    ? "the image manifest \(image.digest) has no attestation manifest"
                    : "the image manifest \(image.digest) has no attestation: no referrer \(referrersPlace) names it as subject"
            )
        }
        return failures
    }

    /// The descriptor of a layer of one of the image's manifests, by its hex digest.
    func imageLayer(hex: String) -> Descriptor? {
        for image in images where MediaType.isManifest(image.mediaType) {
            guard let manifest = try? reader.readJSON(image, as: ImageManifest.self) else { continue }
            if let layer = manifest.layers.first(where: { $0.digest.hex == hex }) { return layer }
        }
        return nil
    }

    /// The platform manifests the provenance must name as subjects.
    var imageManifests: [Digest] { images.filter { MediaType.isManifest($0.mediaType) }.map(\.digest) }
}
