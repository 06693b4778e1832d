import Foundation
import Hermetic
import TestSupport
import Testing

/// What a registry holds in every form a pull reads: an OCI image index (resolved to the platform each
/// build asks for) and a Docker schema-2 manifest, both pushed by skopeo.
@Suite struct RegistryIndexTests {
    @Test func anIndexIsResolvedToTheBuildsPlatformAndDockerSchema2IsRead() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-index-")
        let registry = try RegistryFixture()
        let multi = scratch.path + "/multi"
        var arm = BaseImages.goldenBaseEntries()
        arm.append(
            LayerEntry(
                path: "etc/arch", kind: .regular(.bytes(Array("arm64\n".utf8))), mode: 0o644, mtime: 1_600_000_000))
        let index = try BaseImages.writeMultiPlatformLayout(
            at: multi,
            images: [
                (Platform(os: "linux", architecture: "amd64"), try BaseImages.busyboxEntries()),
                (Platform(os: "linux", architecture: "arm64"), arm),
            ])
        let pushed = try registry.push(layout: multi, as: "multi", skopeoOptions: ["--all"])
        #expect(pushed == index)
        let context = try RegistryPullTests.makeContext(
            scratch, dockerfile: "FROM \(registry.host)/multi@\(pushed)\nCOPY app.txt /app.txt\n")
        func build(_ platform: String, into name: String) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic([
                "build", context, "--progress", "quiet", "--platform", platform, "-o",
                "type=local,dest=\(scratch.path)/\(name)",
            ])
        }
        let amd64 = try build("linux/amd64", into: "amd64")
        try #require(amd64.status == 0, "\(amd64.standardError)")
        #expect(FileManager.default.fileExists(atPath: scratch.path + "/amd64/bin/busybox"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/amd64/etc/arch"))
        let arm64 = try build("linux/arm64", into: "arm64")
        try #require(arm64.status == 0, "\(arm64.standardError)")
        #expect(FileManager.default.contents(atPath: scratch.path + "/arm64/etc/arch") == Data("arm64\n".utf8))
        let s390x = try build("linux/s390x", into: "s390x")
        #expect(s390x.status == 1)
        #expect(
            s390x.standardError
                == "error: Dockerfile:1: image \"\(registry.host)/multi@\(pushed)\": registry \(registry.host): multi@\(pushed): the image index has no image for linux/s390x (it has linux/amd64, linux/arm64)\n",
            "\(s390x.standardError)")

        // Docker schema 2: skopeo converts the busybox image on its way in; the pull reads it, and the image
        // built on it is the one built on the OCI layout (its layers relabelled, the same bytes).
        let busybox = scratch.path + "/busybox"
        let layoutDigest = try BaseImages.writeBusybox(at: busybox)
        let docker = try registry.push(layout: busybox, as: "docker-format", skopeoOptions: ["--format", "v2s2"])
        #expect(docker != layoutDigest)
        let skopeo = try ExternalTools.require("skopeo")
        let raw = try HermeticProcess.run(
            skopeo, ["inspect", "--raw", "--tls-verify=false", "docker://\(registry.host)/docker-format@\(docker)"])
        #expect(raw.standardOutput.contains(MediaType.dockerManifest), "\(raw.standardOutput)")
        try "FROM base\nCOPY app.txt /app.txt\n".write(
            toFile: context + "/Dockerfile.base", atomically: true, encoding: .utf8)
        func buildBase(_ value: String) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic([
                "build", context, "-f", context + "/Dockerfile.base", "--progress", "quiet", "--provenance", "false",
                "--build-context", "base=" + value,
            ])
        }
        let fromDocker = try buildBase("docker-image://\(registry.host)/docker-format@\(docker)")
        try #require(fromDocker.status == 0, "\(fromDocker.standardError)")
        let fromLayout = try buildBase("oci-layout://\(busybox)@\(layoutDigest)")
        try #require(fromLayout.status == 0, "\(fromLayout.standardError)")
        #expect(fromDocker.standardOutput == fromLayout.standardOutput)
    }
}
