import Foundation
import Hermetic
import TestSupport
import Testing

/// Interoperability both ways, with a real `docker-registry` on loopback: what hermetic pushes (one
/// platform, and a two-platform index, each with its attestations as OCI referrers under the referrers tag)
/// is what `skopeo inspect` reads, what `skopeo copy` copies byte for byte, and what `podman pull` stores
/// by the digest hermetic printed; and what skopeo pushed (converted to Docker's schema 2), hermetic builds
/// from.
@Suite struct RegistryInteropTests {
    /// podman with a store of the test's own (vfs in a temporary directory: the host's store is never
    /// touched), its own signature policy and an empty registries.conf, and no events journal.
    struct Podman {
        let directory: TemporaryDirectory
        let executable: String

        init() throws {
            executable = try ExternalTools.require("podman")
            directory = try TemporaryDirectory(prefix: "hermetic-podman-")
            try #"{"default":[{"type":"insecureAcceptAnything"}]}"#.write(
                toFile: directory.path + "/policy.json", atomically: true, encoding: .utf8)
            try "".write(toFile: directory.path + "/registries.conf", atomically: true, encoding: .utf8)
            try "".write(toFile: directory.path + "/containers.conf", atomically: true, encoding: .utf8)
            try "{}".write(toFile: directory.path + "/auth.json", atomically: true, encoding: .utf8)
        }

        func run(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
            let path = directory.path
            let all =
                [
                    "--root", path + "/root", "--runroot", path + "/run", "--storage-driver", "vfs",
                    "--events-backend", "none", "--tmpdir", path + "/tmp",
                ] + arguments
            let outcome = try HermeticProcess.run(
                executable, all,
                environment: [
                    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": path, "CONTAINERS_CONF": path + "/containers.conf",
                    "CONTAINERS_REGISTRIES_CONF": path + "/registries.conf",
                    "REGISTRY_AUTH_FILE": path + "/auth.json",
                ])
            try #require(
                outcome.status == 0, "podman \(arguments): \(outcome.standardError)", sourceLocation: sourceLocation)
            return outcome.standardOutput
        }

        /// Pulls `reference` (plain HTTP on loopback; `credentials` as `USER:PASSWORD`) and returns `podman
        /// image inspect`'s Digest and RepoDigests of what it stored.
        func pull(_ reference: String, credentials: String? = nil, sourceLocation: SourceLocation = #_sourceLocation)
            throws -> (digest: String, repoDigests: [String])
        {
            _ = try run(
                [
                    "pull", "--quiet", "--tls-verify=false", "--signature-policy", directory.path + "/policy.json",
                ] + (credentials.map { ["--creds", $0] } ?? []) + [reference], sourceLocation: sourceLocation)
            let inspected = try run(["image", "inspect", reference], sourceLocation: sourceLocation)
            let images = try #require(
                try JSONSerialization.jsonObject(with: Data(inspected.utf8)) as? [[String: Any]],
                sourceLocation: sourceLocation)
            let image = try #require(images.first, sourceLocation: sourceLocation)
            return (image["Digest"] as? String ?? "", image["RepoDigests"] as? [String] ?? [])
        }
    }

    static func skopeo(_ arguments: [String]) throws -> String { try RegistryPushTests.skopeo(arguments) }

    /// `skopeo copy docker://… oci:DIR:img` (with `--all` for an index) and the digest the copy's
    /// index.json names.
    static func copiedDigest(_ source: String, into directory: String, all: Bool = false) throws -> String {
        _ = try skopeo(
            ["copy", "--src-tls-verify=false"] + (all ? ["--all"] : []) + [
                "docker://\(source)", "oci:\(directory):img",
            ])
        let index = try RegistryPushTests.json(try String(contentsOfFile: directory + "/index.json", encoding: .utf8))
        return try #require((index["manifests"] as? [[String: Any]])?.first?["digest"] as? String)
    }

    /// The referrers tag of `digest` lists the two attestation manifests hermetic pushed (the build
    /// definition and the run record), each of which names `digest` as its subject and which skopeo copies
    /// out by digest.
    static func expectReferrers(of digest: String, in repository: String, scratch: String) throws {
        let hex = digest.dropFirst("sha256:".count)
        let listed = try RegistryPushTests.json(
            try skopeo(["inspect", "--tls-verify=false", "--raw", "docker://\(repository):sha256-\(hex)"]))
        let referrers = (listed["manifests"] as? [[String: Any]] ?? []).compactMap { $0["digest"] as? String }
        #expect(referrers.count == 2, "the build definition and the run record: \(listed)")
        for referrer in referrers {
            let copy = scratch + "/referrer-" + referrer.dropFirst("sha256:".count)
            #expect(try copiedDigest("\(repository)@\(referrer)", into: copy) == referrer)
            let raw = try skopeo(["inspect", "--raw", "oci:\(copy):img"])
            let subject = try RegistryPushTests.json(raw)["subject"] as? [String: Any]
            #expect(subject?["digest"] as? String == digest)
        }
    }

    @Test func whatHermeticPushesSkopeoAndPodmanReadAndWhatSkopeoConvertedHermeticBuildsFrom() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-interop-")
        let layout = scratch.path + "/busybox"
        let base = try BaseImages.writeBusybox(at: layout)
        let registry = try RegistryFixture()
        let context = try RegistryPullTests.makeContext(
            scratch, dockerfile: "FROM base\nRUN echo built > /built.txt\nCOPY app.txt /app.txt\n")
        let repository = "\(registry.host)/interop/single"
        let state = scratch.path + "/state"
        let pushed = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--state-dir", state, "--build-context",
            "base=oci-layout://\(layout)@\(base)", "-o", "type=image,name=\(repository):v1,push=true",
        ])
        try #require(pushed.status == 0, "\(pushed.standardError)")
        let digest = pushed.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)

        let inspected = try RegistryPushTests.json(
            try Self.skopeo(["inspect", "--tls-verify=false", "docker://\(repository):v1"]))
        #expect(inspected["Digest"] as? String == digest)
        #expect(try Self.copiedDigest("\(repository):v1", into: scratch.path + "/copied") == digest)
        try Self.expectReferrers(of: digest, in: repository, scratch: scratch.path)

        let podman = try Podman()
        let pulled = try podman.pull("\(repository):v1")
        #expect(pulled.digest == digest)
        #expect(pulled.repoDigests.contains("\(repository)@\(digest)"), "\(pulled.repoDigests)")

        // skopeo converts it to Docker's schema 2 (a new digest) in another repository; hermetic builds
        // from that, and the RUN of the image hermetic pushed left its file there.
        let digestFile = scratch.path + "/v2s2.digest"
        _ = try Self.skopeo([
            "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--format", "v2s2", "--digestfile",
            digestFile, "docker://\(repository):v1", "docker://\(registry.host)/interop/converted:v1",
        ])
        let converted = try String(contentsOfFile: digestFile, encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        #expect(converted != digest)
        let mediaType =
            try RegistryPushTests.json(
                try Self.skopeo([
                    "inspect", "--tls-verify=false", "--raw",
                    "docker://\(registry.host)/interop/converted@\(converted)",
                ]))["mediaType"] as? String
        #expect(mediaType == "application/vnd.docker.distribution.manifest.v2+json")
        let nextScratch = try TemporaryDirectory(prefix: "registry-interop-next-")
        let next = try RegistryPullTests.makeContext(
            nextScratch,
            dockerfile:
                "FROM \(registry.host)/interop/converted@\(converted)\nRUN cat /built.txt /app.txt > /both.txt\n")
        let rebuilt = try HermeticProcess.hermetic([
            "build", next, "--progress", "quiet", "--state-dir", state, "--provenance", "false", "-o",
            "type=local,dest=\(nextScratch.path)/tree",
        ])
        try #require(rebuilt.status == 0, "\(rebuilt.standardError)")
        #expect(try String(contentsOfFile: nextScratch.path + "/tree/both.txt", encoding: .utf8) == "built\napp\n")
    }

    @Test func aTwoPlatformIndexHermeticPushesIsWhatSkopeoCopiesAndPodmanPulls() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-interop-index-")
        let registry = try RegistryFixture()
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY app.txt /app.txt\n")
        let repository = "\(registry.host)/interop/multi"
        let pushed = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--state-dir", scratch.path + "/state", "--platform",
            "linux/amd64,linux/arm64", "-o", "type=image,name=\(repository):v1,push=true",
        ])
        try #require(pushed.status == 0, "\(pushed.standardError)")
        let digest = pushed.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)

        let raw = try Self.skopeo(["inspect", "--tls-verify=false", "--raw", "docker://\(repository):v1"])
        #expect(Digest.sha256(of: Array(raw.utf8)).description == digest)
        let index = try RegistryPushTests.json(raw)
        #expect(index["mediaType"] as? String == "application/vnd.oci.image.index.v1+json")
        let platforms = (index["manifests"] as? [[String: Any]] ?? []).compactMap {
            ($0["platform"] as? [String: Any])?["architecture"] as? String
        }
        #expect(Set(platforms) == ["amd64", "arm64"])
        // Each platform manifest is the subject of its own attestations (SPEC §1.2).
        for platformManifest in (index["manifests"] as? [[String: Any]] ?? []).compactMap({ $0["digest"] as? String }) {
            try Self.expectReferrers(of: platformManifest, in: repository, scratch: scratch.path)
        }
        let copied = scratch.path + "/copied"
        #expect(try Self.copiedDigest("\(repository):v1", into: copied, all: true) == digest)
        for architecture in ["amd64", "arm64"] {
            let manifest = try RegistryPushTests.json(
                try Self.skopeo(["inspect", "--override-arch", architecture, "oci:\(copied):img"]))
            #expect(manifest["Architecture"] as? String == architecture)
        }

        let podman = try Podman()
        let pulled = try podman.pull("\(repository):v1")
        #expect(pulled.digest == digest, "\(pulled)")
        #expect(pulled.repoDigests.contains("\(repository)@\(digest)"), "\(pulled.repoDigests)")
    }
}
