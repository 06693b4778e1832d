import ArgumentParser
import Foundation
import Hermetic
import Provenance

func loadKeys(_ paths: [String]) throws -> [VerificationKey] {
    try paths.map { path in
        do {
            return try VerificationKey(
                pem: try FileSystem.readFile(path, limit: 1 << 20, allowPipe: true), source: path)
        } catch let error as SystemError {
            throw ArgumentError(argument: "--key", value: path, reason: error.description)
        } catch let error as NotRegularFileError {
            throw ArgumentError(argument: "--key", value: path, reason: error.description)
        }
    }
}

struct InspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Show an image's (or an attestation file's) provenance at a glance.")

    @Argument(
        help:
            "An OCI layout written by hermetic build (DIR or DIR:tag), an --attest-file, or an image in a registry (REG/REPO@sha256:… or REG/REPO:TAG)."
    )
    var target: String
    @Option(help: "Public keys (PEM) to check the signatures with (repeatable).") var key: [String] = []
    @Option(help: "text (default) or json.") var format: String = "text"
    @OptionGroup var registry: RegistryFlags

    func run() async throws {
        try await reportingErrors {
            guard format == "text" || format == "json" else {
                throw ArgumentError(argument: "--format", value: format, reason: "expected text or json")
            }
            let keys = try loadKeys(key)
            try await StoredAttestations.withTarget(target, access: try registry.access()) { stored in
                try show(stored, keys: keys)
            }
        }
    }

    private func show(_ stored: StoredAttestations, keys: [VerificationKey]) throws {
        let statement = try stored.statement()
        let checks = try stored.definition.verify(with: keys)
        if format == "json" {
            var object: [String: JSONValue] = ["statement": try JSONValue.from(statement)]
            if let record = try stored.runRecordStatement() { object["runRecord"] = try JSONValue.from(record) }
            if let image = stored.registryImage {
                // The digest read, and the tag it was resolved from (as `docker buildx imagetools` shows both).
                var shown: [String: JSONValue] = [
                    "name": .string(image.reference.name), "digest": .string(image.top.digest.description),
                    "mediaType": .string(image.top.mediaType),
                ]
                if let tag = image.resolvedTag { shown["tag"] = .string(tag) }
                object["image"] = .object(shown)
            }
            object["signatures"] = .array(
                checks.map { check in
                    switch check {
                    case .valid(let id): return .object(["keyid": .string(id), "verified": .bool(true)])
                    case .invalid(let id): return .object(["keyid": .string(id), "verified": .bool(false)])
                    case .unknownKey(let id): return .object(["keyid": .string(id), "verified": .null])
                    }
                })
            print(String(decoding: try CanonicalJSON.encode(JSONValue.object(object)), as: UTF8.self))
            return
        }
        if let image = stored.registryImage { print("image         \(image.shown)") }
        if stored.provenanceCount > 1 {
            print(
                "provenances   \(stored.provenanceCount) held by the registry's referrers; the first listed is shown (verify takes the first that passes)"
            )
        }
        print(
            ProvenanceSummary.text(statement: statement, runRecord: try stored.runRecordStatement(), checks: checks)
        )
    }
}

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check an image's provenance: signature, subject and policy. Exit 0 only if all hold.")

    @Argument(
        help:
            "An OCI layout written by hermetic build (DIR or DIR:tag), an --attest-file, or an image in a registry (REG/REPO@sha256:… or REG/REPO:TAG)."
    )
    var target: String
    @Option(help: "Public key (PEM) the signature must verify with (repeatable).") var key: [String] = []
    @Flag(
        name: .customLong("allow-unsigned"),
        help: "Check an unsigned provenance (subject, statement, blobs, policy) without a signature, and say so.")
    var allowUnsigned = false
    @Flag(name: .customLong("require-pinned"), help: "Every input must be pinned by digest.") var requirePinned = false
    @Flag(name: .customLong("require-no-network"), help: "No RUN step may have had network access.")
    var requireNoNetwork = false
    @Option(name: .customLong("expect-arg"), help: "A build arg that must have this value, K=V (repeatable).")
    var expectArg: [String] = []
    @OptionGroup var registry: RegistryFlags

    func run() async throws {
        try await reportingErrors {
            guard !key.isEmpty || allowUnsigned else { throw MissingKeyError() }
            var verifier = AttestationVerifier(keys: try loadKeys(key))
            verifier.allowUnsigned = allowUnsigned
            verifier.requirePinned = requirePinned
            verifier.requireNoNetwork = requireNoNetwork
            for pair in expectArg {
                guard let eq = pair.firstIndex(of: "=") else {
                    throw ArgumentError(argument: "--expect-arg", value: pair, reason: "expected K=V")
                }
                verifier.expectedArgs[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
            }
            let (report, shown) = try await StoredAttestations.withTarget(target, access: try registry.access()) {
                (try verifier.select($0).1, $0.registryImage?.shown ?? target)
            }
            guard report.failures.isEmpty else {
                for failure in report.failures {
                    writeErrorLine(
                        failure == AttestationVerifier.unsignedFailure
                            ? failure + " (--allow-unsigned checks the rest without a signature, and says so)"
                            : failure)
                }
                throw ExitCode(1)
            }
            guard let unchecked = report.uncheckedSignature else {
                print("verified: \(shown)")
                return
            }
            print("verified without a signature: \(shown): no signature was checked (\(unchecked))")
        }
    }

    /// Neither a key nor `--allow-unsigned`: verify would have nothing to say about who wrote the provenance.
    struct MissingKeyError: HermeticError {
        var description: String {
            "verify: no --key given: pass --key PUB to check the signature, or --allow-unsigned to check an unsigned provenance without one"
        }
    }
}
