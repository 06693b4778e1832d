import Foundation
import TestSupport
import Testing

/// What `inspect`, `verify` and `rebuild` read a missing TARGET as: a bare name or path (no registry
/// host, tag or digest) is a missing layout, said at once; it is never looked up on Docker Hub.
@Suite struct AttestationTargetTests {
    @Test(arguments: ["inspect", "verify", "rebuild"])
    func aBareMissingNameIsAMissingLayout(command: String) throws {
        let scratch = try TemporaryDirectory(prefix: "attestation-target-")
        for target in ["out-typo", "dist/image"] {
            let extra =
                command == "verify" ? ["--allow-unsigned"] : command == "rebuild" ? ["--context", scratch.path] : []
            let outcome = try HermeticProcess.hermetic([command, target] + extra, currentDirectory: scratch.path)
            #expect(outcome.status == 1)
            #expect(
                outcome.standardError == "error: \(target): no such file or image layout\n",
                "\(command) \(target): \(outcome.standardError)")
        }
    }
}
