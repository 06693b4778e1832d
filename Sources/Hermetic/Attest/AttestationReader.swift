import Foundation
import Provenance

/// Attestations as stored: in an OCI layout written by `hermetic build` (referrers of the image in
/// index.json, or BuildKit's attestation manifests in the image index; the run record named by index.json),
/// or in an `--attest-file` (JSON lines of envelopes).
public struct StoredAttestations: Sendable {
    /// The build-definition envelope (signatures may be empty when the build was not signed).
    public var definition: DSSEEnvelope
    public var runRecord: DSSEEnvelope?
    /// Platform manifest digests of the image, when read from a layout (to check the subject against).
    public var imageManifests: [Digest]?
    /// Where it was read from (named in errors).
    public var source: String = ""
    /// The image and its attestations, when read from a layout (to check every blob of them).
    var layout: LayoutAttestations?
    /// The image in the registry, when read from one (`inspect`, `verify`, `rebuild REG/REPO@…|:TAG`).
    public var registryImage: RegistryImage?
    /// From a registry, where referrers pile up: the other provenances its referrers hold, or the same one
    /// signed by others, in the order listed after this one (each with the referrers that hold its statement).
    /// `verify` takes the first that passes.
    public var alternatives: [StoredAttestations] = []

    /// How many different statements the provenance referrers hold (1 unless they piled up in a registry).
    public var provenanceCount: Int {
        Set(([self] + alternatives).map { (try? $0.definition.payloadBytes()) ?? [] }).count
    }

    public struct ReadError: HermeticError {
        public var source: String
        public var reason: String
        public var description: String { "\(source): \(reason)" }
    }

    public func statement() throws -> InTotoStatement {
        try Self.decodeStatement(definition, source: source, what: "the provenance")
    }

    public func runRecordStatement() throws -> InTotoStatement? {
        guard let runRecord else { return nil }
        return try Self.decodeStatement(runRecord, source: source, what: "the run record")
    }

    static func decodeStatement(_ envelope: DSSEEnvelope, source: String, what: String) throws -> InTotoStatement {
        let payload: [UInt8]
        do {
            payload = try envelope.payloadBytes()
        } catch {
            throw ReadError(source: source, reason: "\(what): \(error)")
        }
        do {
            return try JSONDecoder().decode(InTotoStatement.self, from: Data(payload))
        } catch {
            throw ReadError(
                source: source, reason: "\(what) is not an in-toto statement: \(OCILayoutReader.brief(error))")
        }
    }

    /// `path` is a layout directory (optionally `DIR:tag`) or an attestation file.
    public static func load(_ target: String) throws -> StoredAttestations {
        var path = target
        var tag: String?
        if !FileSystem.exists(path), let colon = target.lastIndex(of: ":") {
            path = String(target[..<colon])
            tag = String(target[target.index(after: colon)...])
        }
        guard FileSystem.exists(path) else { throw ReadError(source: target, reason: "no such file or image layout") }
        var stored = FileSystem.isDirectory(path) ? try fromLayout(path, tag: tag) : try fromFile(path)
        stored.source = target
        return stored
    }

    static func decodeEnvelopeOrStatement(_ bytes: [UInt8], source: String) throws -> DSSEEnvelope {
        if let envelope = try? JSONDecoder().decode(DSSEEnvelope.self, from: Data(bytes)) { return envelope }
        guard (try? JSONDecoder().decode(InTotoStatement.self, from: Data(bytes))) != nil else {
            throw ReadError(source: source, reason: "neither a DSSE envelope nor an in-toto statement")
        }
        return DSSEEnvelope(payload: bytes, payloadType: InTotoStatement.payloadType)
    }

    static func fromFile(_ path: String) throws -> StoredAttestations {
        let bytes = try FileSystem.readFile(path, limit: 64 << 20)
        // One (possibly pretty-printed) envelope or statement, or JSON lines of them.
        if let whole = try? decodeEnvelopeOrStatement(bytes, source: path) {
            return StoredAttestations(definition: whole, runRecord: nil, imageManifests: nil)
        }
        let lines = bytes.split(separator: 0x0a).filter { !$0.allSatisfy { $0 == 0x20 || $0 == 0x0d } }
        guard !lines.isEmpty else { throw ReadError(source: path, reason: "empty") }
        var definition: DSSEEnvelope?
        var runRecord: DSSEEnvelope?
        for (number, line) in lines.enumerated() {
            let envelope = try decodeEnvelopeOrStatement(Array(line), source: "\(path): line \(number + 1)")
            let statement = try decodeStatement(envelope, source: path, what: "line \(number + 1)")
            if statement.predicateType == SLSAProvenance.predicateType {
                definition = envelope
            } else {
                runRecord = envelope
            }
        }
        guard let definition else { throw ReadError(source: path, reason: "no SLSA provenance statement in it") }
        return StoredAttestations(definition: definition, runRecord: runRecord, imageManifests: nil)
    }

    /// `registry`: the layout holds an image fetched from a registry (its manifests, configs and
    /// attestations, not its layers), named in errors as `source`.
    static func fromLayout(_ path: String, tag: String?, registry source: String? = nil) throws
        -> StoredAttestations
    {
        let reader = try OCILayoutReader(path: path)
        let top = try reader.topLevelDescriptor(tag: tag)
        var found = try LayoutAttestations.find(in: reader, top: top)
        var others: [LayoutAttestations] = []
        if source != nil {
            found.imageLayersAtHand = false
            found.referrersPlace = "in the registry's referrers"
            let parts = found.splitByProvenance()
            if let first = parts.first {
                found = first
                others = Array(parts.dropFirst())
            }
        }
        let definition = try found.definition(source: source ?? path)
        // A referrer of its own; in BuildKit's form, a blob named by the image's index.json entry.
        var runRecord = try found.runRecord(source: source ?? path)
        if runRecord == nil, let text = top.annotations?[ImageExporter.runRecordAnnotation],
            let digest = try? Digest(parsing: text)
        {
            let descriptor = Descriptor(
                mediaType: InTotoStatement.payloadType, digest: digest,
                size: Int64((try? FileSystem.readFile(reader.blobPath(digest), limit: 64 << 20).count) ?? 0))
            runRecord = try? decodeEnvelopeOrStatement(try reader.readBlob(descriptor, limit: 64 << 20), source: path)
        }
        var stored = StoredAttestations(
            definition: definition, runRecord: runRecord, imageManifests: found.imageManifests)
        stored.layout = found
        for (number, part) in ([found] + others).enumerated() {
            for envelope in part.envelopes() where number > 0 || envelope != definition {
                var alternative = stored
                alternative.definition = envelope
                alternative.layout = part
                stored.alternatives.append(alternative)
            }
        }
        return stored
    }

    /// The provenance layer of an attestation manifest: its signed envelope when there is one, else the
    /// plain statement (the layer BuildKit's readers take).
    static func provenanceLayer(of manifest: ImageManifest) -> Descriptor? {
        LayoutAttestations.statementLayer(of: manifest, predicateType: SLSAProvenance.predicateType)
    }

    /// Every blob of the image in the layout and of its attestations, read through and checked against its
    /// digest and size; every platform manifest named by an attestation that holds this same provenance.
    func layoutFailures() -> [String] {
        layout?.failures(definition: definition, source: source) ?? []
    }
}

/// `hermetic verify`: signature, subject and policy checks; each failure is one line.
public struct AttestationVerifier {
    public var keys: [VerificationKey]
    public var requirePinned = false
    public var requireNoNetwork = false
    public var expectedArgs: [String: String] = [:]
    /// `--allow-unsigned`: an unsigned provenance (or, without keys, a signed one) passes on its other checks,
    /// and the report says that no signature was checked.
    public var allowUnsigned = false
    /// The failure an unsigned provenance gives without `allowUnsigned`.
    public static let unsignedFailure = "the provenance is not signed"

    public init(keys: [VerificationKey]) {
        self.keys = keys
    }

    /// What `verify` found: one line per failure, and, when no signature was checked, why not.
    public struct Report: Sendable {
        public var failures: [String]
        /// nil when a signature verified; else why none was checked (only with `allowUnsigned`).
        public var uncheckedSignature: String?
    }

    public func failures(of stored: StoredAttestations) throws -> [String] {
        try report(of: stored).failures
    }

    /// The provenance verify settles on and its report: `stored`'s when it passes, else the first of its
    /// alternatives (another provenance a registry's referrers hold) that passes every check, else
    /// `stored`'s failures. As cosign's verify-attestation, one attestation that holds is enough; the others
    /// are claims by other builds (or by anyone who may push) that verify does not vouch for.
    public func select(_ stored: StoredAttestations) throws -> (StoredAttestations, Report) {
        let first = try report(of: stored)
        guard !first.failures.isEmpty else { return (stored, first) }
        for alternative in stored.alternatives {
            if let other = try? report(of: alternative), other.failures.isEmpty { return (alternative, other) }
        }
        return (stored, first)
    }

    public func report(of stored: StoredAttestations) throws -> Report {
        var failures: [String] = []
        var unchecked: String?
        // DSSE: the payload type must be one we support; a signature that does not verify with a given key
        // is skipped, and the envelope holds when at least one does.
        if stored.definition.payloadType != InTotoStatement.payloadType {
            failures.append(
                "the envelope's payloadType is \"\(stored.definition.payloadType)\", not \(InTotoStatement.payloadType)"
            )
        }
        let checks = try stored.definition.verify(with: keys)
        if checks.isEmpty {
            if allowUnsigned {
                unchecked = "the provenance is not signed"
            } else {
                failures.append(Self.unsignedFailure)
            }
        } else if keys.isEmpty && allowUnsigned {
            let ids = checks.map { check -> String in
                switch check {
                case .valid(let id), .invalid(let id), .unknownKey(let id): id
                }
            }
            unchecked = "no --key was given for its signature by key \(ids.joined(separator: ", "))"
        } else if !checks.contains(where: { if case .valid = $0 { true } else { false } }) {
            let reasons = checks.map { check -> String in
                switch check {
                case .valid(let id): "key \(id) verifies"
                case .invalid(let id): "the signature by key \(id) does not verify"
                case .unknownKey(let id): "the signature by key \(id) matches no given --key"
                }
            }
            failures.append("no signature verifies with the given keys (\(reasons.joined(separator: "; ")))")
        }
        let statement = try stored.statement()
        if statement.type != InTotoStatement.type {
            failures.append("the statement's _type is \"\(statement.type)\", not \(InTotoStatement.type)")
        }
        guard statement.predicateType == SLSAProvenance.predicateType else {
            return Report(
                failures: failures
                    + ["the statement's predicateType is \(statement.predicateType), not SLSA provenance v1"],
                uncheckedSignature: unchecked)
        }
        if let manifests = stored.imageManifests {
            let subjects = Set(statement.subject.compactMap { $0.digest?["sha256"] })
            for manifest in manifests where !subjects.contains(manifest.hex) {
                failures.append("the image manifest \(manifest) is not a subject of the provenance")
            }
        }
        failures += stored.layoutFailures()
        let predicate = statement.predicate
        let external = predicate["buildDefinition"]?["externalParameters"]
        // The Dockerfile's bytes, when carried, must be the ones its recorded digest names.
        if let dockerfile = external?["dockerfile"] {
            do { _ = try DockerfileSource(recorded: dockerfile) } catch { failures.append("\(error)") }
        }
        for (key, value) in expectedArgs.sorted(by: { $0.key < $1.key }) {
            let actual = external?["buildArgs"]?[key]?.stringValue
            if actual != value {
                failures.append("build arg \(key) is \(actual.map { "\"\($0)\"" } ?? "not set"), expected \"\(value)\"")
            }
        }
        if requirePinned, case .array(let dependencies)? = predicate["buildDefinition"]?["resolvedDependencies"] {
            for dependency in dependencies where !Self.isPinned(dependency["digest"]) {
                failures.append(
                    "dependency \(dependency["name"]?.stringValue ?? dependency["uri"]?.stringValue ?? "?") is not pinned by digest"
                )
            }
        }
        if requireNoNetwork {
            guard case .array(let byproducts)? = predicate["runDetails"]?["byproducts"] else {
                return Report(
                    failures: failures + ["the provenance has no per-step records (built with --provenance mode=min)"],
                    uncheckedSignature: unchecked)
            }
            for step in byproducts where step["name"]?.stringValue == "run-step" {
                if step["annotations"]?["network"]?.stringValue != "none" {
                    failures.append(
                        "the step at \(step["annotations"]?["instruction"]?.stringValue ?? "?") had network access")
                }
            }
        }
        return Report(failures: failures, uncheckedSignature: unchecked)
    }

    /// A digest map that holds a well-formed sha256 (other algorithms alone do not pin for us).
    static func isPinned(_ digest: JSONValue?) -> Bool {
        guard let hex = digest?["sha256"]?.stringValue else { return false }
        return (try? Digest(parsing: "sha256:" + hex)) != nil
    }
}
