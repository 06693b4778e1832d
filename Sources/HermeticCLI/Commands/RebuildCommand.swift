import ArgumentParser
import Foundation
import Hermetic
import Provenance

struct RebuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild",
        abstract: "Rebuild an image from its provenance in a different environment; exit 0 on a bit-identical match.")

    @Argument(help: "An OCI layout written by hermetic build (DIR or DIR:tag), or an --attest-file.") var target: String
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

    func run() async throws {
        try await reportingErrors {
            var named: [String: NamedContext] = [:]
            for entry in buildContext {
                let (name, value) = try NamedContext.parse(entry)
                named[name] = value
            }
            if !key.isEmpty {
                let failures = try AttestationVerifier(keys: try loadKeys(key)).failures(
                    of: try StoredAttestations.load(target))
                guard failures.isEmpty else {
                    for failure in failures { writeErrorLine(failure) }
                    throw ExitCode(1)
                }
            }
            let executable =
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? CommandLine.arguments[0]
            let outcome = try Rebuilder(
                target: target, contextDirectory: context, dockerfile: file, namedContexts: named, secrets: secret,
                entitlements: allow, executable: executable
            ).run()
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
            if outcome.reproduced {
                print("reproduced: \(outcome.originalSubjects.map { "sha256:" + $0 }.joined(separator: ", "))")
                return
            }
            writeStandardError(
                "error: rebuild differs: expected \(outcome.originalSubjects.map { "sha256:" + $0 }.joined(separator: ", ")), got \(outcome.rebuiltSubjects.map { "sha256:" + $0 }.joined(separator: ", "))\n"
            )
            for finding in outcome.findings { writeStandardError(finding + "\n") }
            throw ExitCode(1)
        }
    }
}
