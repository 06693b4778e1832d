import ArgumentParser
import Foundation
import Hermetic
import Provenance

struct RebuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild",
        abstract: "Rebuild an image from its provenance in a different environment; exit 0 on a bit-identical match.")

    @Argument(
        help:
            "An OCI layout written by hermetic build (DIR or DIR:tag), an --attest-file, or an image in a registry (REG/REPO@sha256:… or REG/REPO:TAG), whose platform manifests the rebuild must give."
    )
    var target: String
    @Option(help: "The build context directory to rebuild from.") var context: String
    @Option(
        name: [.customShort("f"), .long],
        help:
            "The Dockerfile, checked against the recorded digest (needed when the build read it from outside the context; default: the recorded path in the context, or the bytes the provenance carries for a -f - build)."
    )
    var file: String?
    @Option(
        name: .customLong("build-context"), help: "NAME=oci-layout:///path for each image the build used (repeatable).")
    var buildContext: [String] = []
    @Option(help: "Secrets the build used, supplied again: id=ID,src=FILE or id=ID,env=VAR (repeatable).")
    var secret: [String] = []
    @Option(help: "Entitlements to grant again (repeatable).") var allow: [String] = []
    @Option(help: "Public key (PEM) the provenance's signature must verify with before rebuilding (repeatable).")
    var key: [String] = []
    @Option(name: .customLong("sign-key"), help: "Sign a SLSA Verification Summary Attestation with this key.")
    var signKey: String?
    @Option(name: .customLong("vsa-file"), help: "Where to write the signed VSA envelope (default: rebuild.vsa.json).")
    var vsaFile: String = "rebuild.vsa.json"
    @OptionGroup var registry: RegistryFlags

    func run() async throws {
        try await reportingErrors {
            var named: [String: NamedContext] = [:]
            for entry in buildContext {
                let (name, value) = try NamedContext.parse(entry)
                named[name] = value
            }
            let keys = try loadKeys(key)
            let executable =
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? CommandLine.arguments[0]
            let (outcome, image) = try await StoredAttestations.withTarget(target, access: try registry.access()) {
                stored in
                // With --key, the provenance verify settles on is the one rebuilt from.
                var followed = stored
                if !keys.isEmpty {
                    let (chosen, report) = try AttestationVerifier(keys: keys).select(stored)
                    guard report.failures.isEmpty else {
                        for failure in report.failures { writeErrorLine(failure) }
                        throw ExitCode(1)
                    }
                    followed = chosen
                }
                var rebuilder = Rebuilder(
                    target: target, contextDirectory: context, dockerfile: file, namedContexts: named,
                    secrets: secret, entitlements: allow, executable: executable)
                rebuilder.stored = followed
                return (try await rebuilder.run(), stored.registryImage)
            }
            if let signKey {
                let key = try SigningKey(
                    pem: try FileSystem.readFile(signKey, limit: 1 << 20, allowPipe: true), source: signKey)
                let summary = VerificationSummary(
                    verifier: .init(
                        id: "https://hermetic.build/rebuilder/v1", version: ["hermetic": HermeticVersion.string]),
                    timeVerified: RFC3339.format(Int64(Date().timeIntervalSince1970)),
                    resourceUri: VerificationSummary.packageURL(
                        name: outcome.statement.subject.first?.name ?? "image",
                        digest: outcome.statement.subject.first?.digest?["sha256"] ?? ""),
                    policy: ResourceDescriptor(uri: "https://hermetic.build/policies/bit-identical-rebuild/v1"),
                    inputAttestations: [
                        ResourceDescriptor(
                            name: "provenance", digest: ["sha256": outcome.provenanceDigest.hex],
                            mediaType: InTotoStatement.payloadType)
                    ],
                    passed: outcome.reproduced,
                    // A match shows the provenance describes the artifact truly (build L1); the levels above
                    // are about the build platform, which a rebuild cannot vouch for.
                    verifiedLevels: outcome.reproduced ? ["SLSA_BUILD_LEVEL_1"] : ["FAILED"], slsaVersion: "1.0")
                let vsa = InTotoStatement(
                    subject: outcome.statement.subject, predicateType: VerificationSummary.predicateType,
                    predicate: try JSONValue.from(summary))
                var envelope = DSSEEnvelope(
                    payload: try CanonicalJSON.encode(vsa), payloadType: InTotoStatement.payloadType)
                try envelope.sign(with: key)
                try FileSystem.writeAtomically(try CanonicalJSON.encode(envelope) + [0x0a], to: vsaFile)
            }
            // From a registry: the digest read (and the tag it came from) is named after the manifests.
            let from =
                image.map { " (of \($0.reference.name)@\($0.top.digest)\($0.resolvedTag.map { ", tag \($0)" } ?? ""))" }
                ?? ""
            if outcome.reproduced {
                print("reproduced: \(outcome.originalSubjects.map { "sha256:" + $0 }.joined(separator: ", "))\(from)")
                return
            }
            writeStandardError(
                "error: rebuild differs: expected \(outcome.originalSubjects.map { "sha256:" + $0 }.joined(separator: ", "))\(from), got \(outcome.rebuiltSubjects.map { "sha256:" + $0 }.joined(separator: ", "))\n"
            )
            for finding in outcome.findings { writeStandardError(finding + "\n") }
            throw ExitCode(1)
        }
    }
}
