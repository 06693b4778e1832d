import Foundation
import Hermetic
import TestSupport
import Testing

/// `hermetic lock` resolves a registry tag to the digest it names now, for each platform asked, and keeps
/// that pin until `--update` moves it; a build then pulls by the pin, never by the tag.
@Suite struct RegistryLockTests {
    @Test func lockPinsATagThroughTheRegistryAndOnlyUpdateMovesThePin() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-lock-")
        let registry = try RegistryFixture()
        let reference = "\(registry.host)/tools/base:1.0"
        let first = try registry.push(
            layout: try Self.layout(scratch, "busybox", BaseImages.writeBusybox), as: "tools/base",
            destinationTag: "1.0")
        let context = try RegistryPullTests.makeContext(
            scratch, dockerfile: "FROM \(reference)\nCOPY app.txt /app.txt\n")
        let lockFile = context + "/hermetic.lock"
        func lock(_ extra: [String] = []) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(["lock", context] + extra)
        }
        func pins() throws -> [String: String] {
            let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: lockFile)))
            return (object as? [String: Any])?["images"] as? [String: String] ?? [:]
        }
        let locked = try lock()
        try #require(locked.status == 0, "\(locked.standardError)")
        #expect(try pins() == [reference: first.description])

        // The build takes the pin from the lock file and pulls by it.
        let built = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "-o", "type=oci,dest=\(scratch.path)/out",
        ])
        #expect(built.status == 0, "\(built.standardError)")

        // The tag moves in the registry: lock keeps the pin, lock --update moves it.
        let moved = try registry.push(
            layout: try Self.layout(scratch, "golden", BaseImages.writeGoldenBase), tag: "latest", as: "tools/base",
            destinationTag: "1.0")
        #expect(moved != first)
        let again = try lock()
        try #require(again.status == 0, "\(again.standardError)")
        #expect(try pins() == [reference: first.description])
        let updated = try lock(["--update", reference])
        try #require(updated.status == 0, "\(updated.standardError)")
        #expect(try pins() == [reference: moved.description])

        let unknown = try lock(["--update", "\(registry.host)/other:1"])
        #expect(unknown.status == 1)
        #expect(
            unknown.standardError
                == "error: --update \"\(registry.host)/other:1\": the Dockerfile's stages use no image so named\n")
        let withoutUpdate = try lock([reference])
        #expect(withoutUpdate.status == 64 || withoutUpdate.status == 1, "\(withoutUpdate.standardError)")
        #expect(withoutUpdate.standardError.contains("image names are taken only with --update"))

        // A tag whose image is not the platform asked for is not pinned.
        let arm = try lock(["--update", "--platform", "linux/arm64"])
        #expect(arm.status == 1)
        #expect(
            arm.standardError
                == "error: image \"\(reference)\": registry \(registry.host): tools/base:1.0: the image is linux/amd64, not the requested linux/arm64\n",
            "\(arm.standardError)")
        #expect(try pins() == [reference: moved.description])
    }

    static func layout(_ scratch: TemporaryDirectory, _ name: String, _ write: (String) throws -> Digest) throws
        -> String
    {
        let path = scratch.path + "/" + name
        _ = try write(path)
        return path
    }
}
