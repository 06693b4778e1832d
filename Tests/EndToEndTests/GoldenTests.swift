import Foundation
import Hermetic
import TestSupport
import Testing

/// Each golden case is built twice by the real binary, from two copies of its context that differ in
/// path, file mtimes, creation order, umask, TZ and locale; both builds must give the committed digest.
/// `HERMETIC_RECORD_GOLDEN=1` rewrites `expected-digest` files, and then fails, so that a refreshed
/// golden never passes silently.
@Suite(.serialized) struct GoldenTests {
    static let goldenRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("golden").path

    static var caseNames: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: goldenRoot)) ?? [])
            .filter { FileManager.default.fileExists(atPath: goldenRoot + "/" + $0 + "/case.json") }
            .sorted()
    }

    struct CaseSpec: Decodable {
        var dockerfile: String?
        var target: String?
        var platform: String?
        var contexts: [String]?
        var buildArgs: [String: String]?
        enum CodingKeys: String, CodingKey {
            case dockerfile, target, platform, contexts
            case buildArgs = "build-args"
        }
    }

    @Test func thereAreEnoughCases() {
        #expect(Self.caseNames.count >= 20)
    }

    @Test(arguments: caseNames)
    func buildsReproducibly(name: String) throws {
        let caseDir = Self.goldenRoot + "/" + name
        let spec = try JSONDecoder().decode(
            CaseSpec.self, from: Data(contentsOf: URL(fileURLWithPath: caseDir + "/case.json")))
        let scratch = try TemporaryDirectory(prefix: "golden-\(name)-")
        let baseLayout = scratch.path + "/base-layout"
        let baseDigest = try BaseImages.writeGoldenBase(at: baseLayout)

        var digests: [String] = []
        for variant in GoldenVariant.all {
            let context = scratch.path + variant.contextSubpath
            try ContextCopier.copy(
                from: caseDir + "/context", to: context, reverseOrder: variant.reverseOrder,
                mtime: variant.mtime)
            var arguments = [
                "build", context, "--source-date-epoch", "1700000000", "--progress", "quiet",
                "--iidfile", context + ".iid", "--output", "type=oci,dest=\(context).oci",
                // A name, so that skopeo can pick the image beside its provenance's referrers in index.json.
                "-t", "golden:\(name)",
            ]
            if let dockerfile = spec.dockerfile { arguments += ["-f", context + "/" + dockerfile] }
            if let target = spec.target { arguments += ["--target", target] }
            // Golden digests must not depend on the machine's architecture.
            arguments += ["--platform", spec.platform ?? "linux/amd64"]
            for contextName in spec.contexts ?? [] {
                arguments += ["--build-context", "\(contextName)=oci-layout://\(baseLayout)@\(baseDigest)"]
            }
            for (key, value) in (spec.buildArgs ?? [:]).sorted(by: { $0.key < $1.key }) {
                arguments += ["--build-arg", "\(key)=\(value)"]
            }
            let outcome = try HermeticProcess.hermetic(
                arguments, environment: variant.environment,
                umask: variant.umask, currentDirectory: variant.workingDirectory(scratch.path))
            #expect(outcome.status == 0, "\(name) (\(variant.label)) failed: \(outcome.standardError)")
            guard outcome.status == 0 else { return }
            let digest = try String(contentsOfFile: context + ".iid", encoding: .utf8)
            digests.append(digest)
            try ExternalTools.checkLayout(context + ".oci", tag: name)
            if variant.label == "first" {
                // An auditor's check: rebuilt from the provenance alone, elsewhere, it is bit-identical.
                var rebuild = ["rebuild", context + ".oci", "--context", context]
                for contextName in spec.contexts ?? [] {
                    rebuild += ["--build-context", "\(contextName)=oci-layout://\(baseLayout)"]
                }
                let rebuilt = try HermeticProcess.hermetic(rebuild)
                #expect(
                    rebuilt.status == 0 && rebuilt.standardOutput.hasPrefix("reproduced:"),
                    "\(name): rebuild from provenance: \(rebuilt.standardError)")
            }
        }
        #expect(digests.count == 2 && digests[0] == digests[1], "\(name): the two builds differ: \(digests)")
        let expectedPath = caseDir + "/expected-digest"
        if ProcessInfo.processInfo.environment["HERMETIC_RECORD_GOLDEN"] == "1" {
            try (digests[0] + "\n").write(toFile: expectedPath, atomically: true, encoding: .utf8)
            Issue.record(
                "recorded \(name): \(digests[0]) (recording always fails; run again without HERMETIC_RECORD_GOLDEN)")
            return
        }
        let expected = try String(contentsOfFile: expectedPath, encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        #expect(digests[0] == expected, "\(name): built \(digests[0]), golden says \(expected)")
    }
}

/// The two environments a golden case is built in.
struct GoldenVariant {
    var label: String
    var contextSubpath: String
    var reverseOrder: Bool
    var mtime: Int
    var umask: String
    var environment: [String: String]

    func workingDirectory(_ scratch: String) -> String { scratch }

    static let all = [
        GoldenVariant(
            label: "first", contextSubpath: "/a/ctx", reverseOrder: false, mtime: 1_000_000_000,
            umask: "022", environment: ["TZ": "UTC", "LANG": "C.UTF-8"]),
        GoldenVariant(
            label: "second", contextSubpath: "/some/much/deeper/path/ctx", reverseOrder: true,
            mtime: 1_750_000_000, umask: "077",
            environment: ["TZ": "Pacific/Chatham", "LANG": "fr_FR.UTF-8", "LC_ALL": "tr_TR.UTF-8"]),
    ]
}
