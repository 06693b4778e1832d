import Foundation
import Hermetic
import TestSupport
import Testing

/// An image never carries a platform label that its content is not (SPEC §2, Platforms): wherever a base is
/// resolved, the requested platform is compared with the config's and the descriptor's; a RUN for an
/// architecture this host cannot execute is refused before any step runs; malformed platforms are refused.
@Suite struct PlatformTrustTests {
    static let host = Platform.host
    /// An architecture this host does not run natively.
    static let foreign = Platform(os: "linux", architecture: Platform.host.architecture == "amd64" ? "arm64" : "amd64")

    /// A context (Dockerfile and `a.txt`) and base layouts in one scratch directory.
    struct Fixture {
        let scratch: TemporaryDirectory
        var context: String { scratch.path + "/ctx" }
        var output: String { scratch.path + "/out" }

        init(_ dockerfile: String) throws {
            scratch = try TemporaryDirectory(prefix: "platform-trust-")
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            try "a\n".write(toFile: context + "/a.txt", atomically: true, encoding: .utf8)
        }

        /// A layout named `name` of busybox images labelled as given; returns (its path, the pin).
        func layout(
            _ name: String, _ images: [(config: Platform, label: Platform?)], top: BaseImages.LayoutTop,
            onBuild: [String] = []
        ) throws -> (path: String, digest: Digest) {
            let entries = try BaseImages.busyboxEntries()
            let path = scratch.path + "/" + name
            let digest = try BaseImages.writePlatformLayout(
                at: path,
                images: images.map { image in
                    // Each image says what its config is, so a test sees which one a build took.
                    let marker = LayerEntry(
                        path: "etc/platform", kind: .regular(.bytes(Array("\(image.config)\n".utf8))), mode: 0o644)
                    return BaseImages.PlatformImage(
                        entries: entries + [marker], config: image.config, label: image.label, onBuild: onBuild)
                }, top: top)
            return (path, digest)
        }

        func build(_ arguments: [String], progress: String = "quiet", local: Bool = false) throws
            -> HermeticProcess.Outcome
        {
            try HermeticProcess.hermetic(
                ["build", context, "--progress", progress, "-o", "type=\(local ? "local" : "oci"),dest=\(output)"]
                    + arguments)
        }

        /// The platform of the built image's config for `platform`.
        func builtPlatform(_ platform: Platform) throws -> Platform {
            let image = try OCILayoutReader(path: output).resolveImage(reference: nil, digest: nil, platform: platform)
            return Platform(os: image.config.os, architecture: image.config.architecture, variant: image.config.variant)
        }
    }

    static func context(_ name: String, _ layout: (path: String, digest: Digest)) -> [String] {
        ["--build-context", "\(name)=oci-layout://\(layout.path)@\(layout.digest)"]
    }

    /// The build failed with exactly `line` as its one error line, and wrote no output.
    static func expectRefused(
        _ outcome: HermeticProcess.Outcome, _ line: String, _ fixture: Fixture,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let errors = outcome.standardError.split(separator: "\n").filter { $0.hasPrefix("error:") }.map(String.init)
        #expect(outcome.status == 1, "\(outcome.standardError)", sourceLocation: sourceLocation)
        #expect(errors == ["error: " + line], "\(outcome.standardError)", sourceLocation: sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: fixture.output), sourceLocation: sourceLocation)
    }

    static func mismatch(_ use: String, _ path: String, found: Platform, line: Int = 1) -> String {
        "Dockerfile:\(line): \(use): the image in oci-layout://\(path) is \(found), not the requested \(foreign)"
    }

    /// A single-platform layout whose index.json points straight at a manifest (as `skopeo copy` writes),
    /// pinned by that manifest: `--platform` of another architecture is refused, not relabelled.
    @Test func manifestPinnedBaseOfAnotherArchitectureIsRefused() throws {
        let fixture = try Fixture("FROM base\nCOPY a.txt /a.txt\n")
        let base = try fixture.layout("base", [(Self.host, Self.host)], top: .manifests)
        let refused = try fixture.build(["--platform", Self.foreign.description] + Self.context("base", base))
        Self.expectRefused(refused, Self.mismatch("FROM base", base.path, found: Self.host), fixture)
        let native = try fixture.build(["--platform", Self.host.description] + Self.context("base", base))
        try #require(native.status == 0, "\(native.standardError)")
        #expect(try fixture.builtPlatform(Self.host) == Self.host)
    }

    /// A layout as `skopeo copy` writes it (index.json points at the manifest, with no platform), made by
    /// skopeo itself from a busybox layout for this host.
    @Test func skopeoCopiedLayoutIsJudgedByItsConfig() throws {
        let skopeo = try ExternalTools.require("skopeo")
        let fixture = try Fixture("FROM base\nCOPY a.txt /a.txt\n")
        try BaseImages.writeBusybox(at: fixture.scratch.path + "/busybox")
        let copied = fixture.scratch.path + "/copied"
        let copy = try HermeticProcess.run(
            skopeo, ["copy", "oci:\(fixture.scratch.path)/busybox:latest", "oci:\(copied):latest"])
        try #require(copy.status == 0, "\(copy.standardError)")
        let top = try OCILayoutReader(path: copied).topLevelDescriptor(tag: "latest")
        #expect(top.platform == nil && MediaType.isManifest(top.mediaType))
        let pinned = ["--build-context", "base=oci-layout://\(copied)@\(top.digest)"]
        Self.expectRefused(
            try fixture.build(["--platform", Self.foreign.description] + pinned),
            Self.mismatch("FROM base", copied, found: Self.host), fixture)
        let native = try fixture.build(pinned)
        #expect(native.status == 0, "\(native.standardError)")
    }

    /// A descriptor without a platform is judged by its config, and a label that disagrees with the config
    /// is refused too.
    @Test func unlabelledOrMislabelledDescriptorIsJudgedByItsContent() throws {
        let fixture = try Fixture("FROM base\nCOPY a.txt /a.txt\n")
        let unlabelled = try fixture.layout("unlabelled", [(Self.host, nil)], top: .manifests)
        let refused = try fixture.build(["--platform", Self.foreign.description] + Self.context("base", unlabelled))
        Self.expectRefused(refused, Self.mismatch("FROM base", unlabelled.path, found: Self.host), fixture)

        // Labelled with the host's platform in index.json, while its config says the foreign one.
        let mislabelled = try fixture.layout("mislabelled", [(Self.foreign, Self.host)], top: .manifests)
        let contradicted = try fixture.build(
            ["--platform", Self.foreign.description] + Self.context("base", mislabelled))
        Self.expectRefused(
            contradicted,
            "Dockerfile:1: FROM base: the image in oci-layout://\(mislabelled.path) is labelled \(Self.host) in its index, not the requested \(Self.foreign)",
            fixture)

        // An unlabelled image whose config is the foreign platform serves a COPY-only build for it.
        let foreign = try fixture.layout("foreign", [(Self.foreign, nil)], top: .manifests)
        let built = try fixture.build(["--platform", Self.foreign.description] + Self.context("base", foreign))
        try #require(built.status == 0, "\(built.standardError)")
        #expect(try fixture.builtPlatform(Self.foreign) == Self.foreign)
    }

    /// Pinned by an image index: the entry chosen by its label must also be that platform inside.
    @Test func indexPinnedBaseWhoseEntryLiesIsRefused() throws {
        let fixture = try Fixture("FROM base\nCOPY a.txt /a.txt\n")
        let lying = try fixture.layout("lying", [(Self.host, Self.host), (Self.host, Self.foreign)], top: .index)
        let refused = try fixture.build(["--platform", Self.foreign.description] + Self.context("base", lying))
        Self.expectRefused(refused, Self.mismatch("FROM base", lying.path, found: Self.host), fixture)

        let single = try fixture.layout("single", [(Self.host, Self.host)], top: .index)
        Self.expectRefused(
            try fixture.build(["--platform", Self.foreign.description] + Self.context("base", single)),
            "Dockerfile:1: FROM base: the image index in oci-layout://\(single.path) has no image for \(Self.foreign) (it has \(Self.host))",
            fixture)

        let honest = try fixture.layout("honest", [(Self.host, Self.host), (Self.foreign, Self.foreign)], top: .index)
        let built = try fixture.build(["--platform", Self.foreign.description] + Self.context("base", honest))
        try #require(built.status == 0, "\(built.standardError)")
        #expect(try fixture.builtPlatform(Self.foreign) == Self.foreign)
    }

    /// The image is labelled with the target platform, so the target stage must be built for it: a target
    /// stage of another platform (`FROM --platform=$BUILDPLATFORM`, or a stage built on one) is refused,
    /// with `--platform` and without (then the target is the host's, and the message says how to ask).
    @Test func targetStageOfAnotherPlatformIsNotRelabelled() throws {
        let fixture = try Fixture("FROM --platform=$BUILDPLATFORM base\nCOPY a.txt /a.txt\n")
        let multi = try fixture.layout("multi", [(Self.host, Self.host), (Self.foreign, Self.foreign)], top: .index)
        Self.expectRefused(
            try fixture.build(["--platform", Self.foreign.description] + Self.context("base", multi)),
            "Dockerfile:1: the target stage \"stage-0\" is built for \(Self.host) by FROM --platform, not the requested \(Self.foreign)",
            fixture)

        try "FROM --platform=\(Self.foreign) base AS tools\nFROM tools\nCOPY a.txt /a.txt\n".write(
            toFile: fixture.context + "/Dockerfile", atomically: true, encoding: .utf8)
        Self.expectRefused(
            try fixture.build(Self.context("base", multi)),
            "Dockerfile:2: the target stage \"stage-1\" is built for \(Self.foreign) by FROM --platform, not the default \(Self.host) (this host's; pass --platform \(Self.foreign) to build for it)",
            fixture)
        let asked = try fixture.build(["--platform", Self.foreign.description] + Self.context("base", multi))
        try #require(asked.status == 0, "\(asked.standardError)")
        #expect(try fixture.builtPlatform(Self.foreign) == Self.foreign)
    }

    /// Variants as containerd's matcher, kept to one architecture: a base of a lower variant serves a
    /// higher one, never the reverse, and an index gives the best variant that serves.
    @Test func variantsFollowContainerdsMatcher() throws {
        let fixture = try Fixture("FROM base\nCOPY a.txt /a.txt\n")
        let v3 = Platform(os: "linux", architecture: "amd64", variant: "v3")
        let newer = try fixture.layout("v3", [(v3, nil)], top: .manifests)
        Self.expectRefused(
            try fixture.build(["--platform", "linux/amd64"] + Self.context("base", newer)),
            "Dockerfile:1: FROM base: the image in oci-layout://\(newer.path) is linux/amd64/v3, not the requested linux/amd64",
            fixture)

        let arm = { (variant: String) in Platform(os: "linux", architecture: "arm", variant: variant) }
        let arms = try fixture.layout(
            "arms", [(arm("v5"), arm("v5")), (arm("v7"), arm("v7")), (arm("v6"), arm("v6"))], top: .index)
        for (requested, taken) in [("linux/arm/v8", "linux/arm/v7"), ("linux/arm/v6", "linux/arm/v6")] {
            try? FileManager.default.removeItem(atPath: fixture.output)
            let built = try fixture.build(["--platform", requested] + Self.context("base", arms), local: true)
            try #require(built.status == 0, "\(built.standardError)")
            #expect(try String(contentsOfFile: fixture.output + "/etc/platform", encoding: .utf8) == taken + "\n")
        }
    }

    /// `FROM --platform=` (after expansion) asks for that platform, and a malformed or empty one is refused
    /// with the Dockerfile line.
    @Test func fromPlatformIsCheckedAndParsed() throws {
        let fixture = try Fixture(
            "FROM --platform=\(Self.foreign) base AS tools\nFROM scratch\nCOPY --from=tools /etc/passwd /passwd\n")
        let base = try fixture.layout("base", [(Self.host, Self.host)], top: .manifests)
        Self.expectRefused(
            try fixture.build(Self.context("base", base)), Self.mismatch("FROM base", base.path, found: Self.host),
            fixture)

        try "ARG P=garbage\nFROM --platform=$P base\n".write(
            toFile: fixture.context + "/Dockerfile", atomically: true, encoding: .utf8)
        Self.expectRefused(
            try fixture.build(Self.context("base", base)),
            "Dockerfile:2: FROM --platform=garbage: unknown operating system or architecture (expected os/arch)",
            fixture)

        try "FROM --platform=$NOTSET base\n".write(
            toFile: fixture.context + "/Dockerfile", atomically: true, encoding: .utf8)
        Self.expectRefused(
            try fixture.build(Self.context("base", base)),
            "Dockerfile:1: FROM --platform: empty platform value from expression $NOTSET", fixture)
    }

    /// Each platform of a multi-platform build resolves its own base: a single-architecture base fails
    /// the platform it is not, and nothing is written.
    @Test func multiPlatformBuildOverSingleArchBaseIsRefused() throws {
        let fixture = try Fixture("FROM base\nCOPY a.txt /a.txt\n")
        let base = try fixture.layout("base", [(Self.host, Self.host)], top: .manifests)
        let both = "\(Self.host),\(Self.foreign)"
        Self.expectRefused(
            try fixture.build(["--platform", both] + Self.context("base", base)),
            Self.mismatch("FROM base", base.path, found: Self.host), fixture)

        let multi = try fixture.layout("multi", [(Self.host, Self.host), (Self.foreign, Self.foreign)], top: .index)
        let built = try fixture.build(["--platform", both] + Self.context("base", multi))
        try #require(built.status == 0, "\(built.standardError)")
        #expect(try fixture.builtPlatform(Self.host) == Self.host)
        #expect(try fixture.builtPlatform(Self.foreign) == Self.foreign)
    }

    /// `COPY --from=<image>` takes the target platform's image, checked the same way.
    @Test func copyFromImageIsChecked() throws {
        let fixture = try Fixture("FROM scratch\nCOPY --from=base /etc/passwd /passwd\n")
        let base = try fixture.layout("base", [(Self.host, Self.host)], top: .manifests)
        Self.expectRefused(
            try fixture.build(["--platform", Self.foreign.description] + Self.context("base", base)),
            Self.mismatch("--from=base", base.path, found: Self.host, line: 2), fixture)
    }

    /// A base pinned only by the lock file is checked like any other.
    @Test func lockFilePinIsChecked() throws {
        let fixture = try Fixture("FROM base\nCOPY a.txt /a.txt\n")
        let base = try fixture.layout("base", [(Self.host, Self.host)], top: .manifests)
        let unpinned = ["--build-context", "base=oci-layout://\(base.path)"]
        let locked = try HermeticProcess.hermetic(["lock", fixture.context] + unpinned)
        try #require(locked.status == 0, "\(locked.standardError)")
        let lock = try String(contentsOfFile: fixture.context + "/hermetic.lock", encoding: .utf8)
        #expect(lock.contains(base.digest.description))
        Self.expectRefused(
            try fixture.build(["--platform", Self.foreign.description] + unpinned),
            Self.mismatch("FROM base", base.path, found: Self.host), fixture)
    }

    /// `--platform` entries are `os/arch[/variant]` with names Go knows, normalised as containerd does.
    @Test(arguments: [
        ("garbage", "--platform \"garbage\": unknown operating system or architecture (expected os/arch)"),
        ("linux/garbage", "--platform \"linux/garbage\": unknown architecture \"garbage\""),
        ("plan10/amd64", "--platform \"plan10/amd64\": unknown operating system \"plan10\""),
        ("linux/amd64/v9", "--platform \"linux/amd64/v9\": unknown variant \"v9\" of amd64 (one of v2, v3, v4)"),
        (
            "linux/amd64,garbage",
            "--platform \"linux/amd64,garbage\": \"garbage\": unknown operating system or architecture (expected os/arch)"
        ),
        ("linux/arm64/v8/x", "--platform \"linux/arm64/v8/x\": expected os/arch[/variant]"),
    ])
    func malformedPlatformIsRefused(text: String, line: String) throws {
        let fixture = try Fixture("FROM scratch\nCOPY a.txt /a.txt\n")
        let outcome = try fixture.build(["--platform", text])
        #expect(outcome.status != 0)
        #expect(outcome.standardError == "error: \(line)\n", "\(outcome.standardError)")
        #expect(!FileManager.default.fileExists(atPath: fixture.output))
    }

    /// Names are normalised as containerd's Parse: `aarch64`, `x86_64`, `armhf`, any case, and a lone OS
    /// (`linux`) taking the host's architecture.
    @Test func platformNamesAreNormalised() throws {
        let fixture = try Fixture("FROM scratch\nCOPY a.txt /a.txt\n")
        let other = Self.host.architecture == "amd64" ? "Linux/AARCH64" : "linux/X86_64"
        let built = try fixture.build(["--platform", "\(other),armhf,linux"])
        try #require(built.status == 0, "\(built.standardError)")
        #expect(try fixture.builtPlatform(Self.foreign) == Self.foreign)
        #expect(try fixture.builtPlatform(Self.host) == Self.host)
        let arm = Platform(os: "linux", architecture: "arm", variant: "v7")
        #expect(try fixture.builtPlatform(arm) == arm)
    }

    /// A RUN for an architecture this host cannot execute is refused at planning, before any step of any
    /// platform runs; a RUN an ONBUILD trigger brings in is refused too. RUN on `$BUILDPLATFORM` and for
    /// linux/386 on amd64 (run natively) still work.
    @Test func foreignRunIsRefusedBeforeAnyStepRuns() throws {
        let fixture = try Fixture("FROM base\nRUN echo STEP-RAN-$(uname -m)\n")
        let multi = try fixture.layout("multi", [(Self.host, Self.host), (Self.foreign, Self.foreign)], top: .index)
        let refused = try fixture.build(
            ["--platform", "\(Self.host),\(Self.foreign)"] + Self.context("base", multi), progress: "plain")
        Self.expectRefused(
            refused, "Dockerfile:2: RUN for \(Self.foreign) cannot run on this \(Self.host) host (no emulation)",
            fixture)
        #expect(!refused.standardError.contains("STEP-RAN"), "\(refused.standardError)")

        let triggered = try fixture.layout(
            "triggered", [(Self.foreign, Self.foreign)], top: .manifests, onBuild: ["RUN echo TRIGGER-RAN"])
        try "FROM base\nCOPY a.txt /a.txt\n".write(
            toFile: fixture.context + "/Dockerfile", atomically: true, encoding: .utf8)
        let trigger = try fixture.build(
            ["--platform", Self.foreign.description] + Self.context("base", triggered), progress: "plain")
        Self.expectRefused(
            trigger, "Dockerfile:1: RUN for \(Self.foreign) cannot run on this \(Self.host) host (no emulation)",
            fixture)
        #expect(!trigger.standardError.contains("TRIGGER-RAN"), "\(trigger.standardError)")

        try """
        FROM --platform=$BUILDPLATFORM base AS build
        RUN echo built > /built
        FROM base
        COPY --from=build /built /built
        """.write(toFile: fixture.context + "/Dockerfile", atomically: true, encoding: .utf8)
        let cross = try fixture.build(["--platform", Self.foreign.description] + Self.context("base", multi))
        #expect(cross.status == 0, "\(cross.standardError)")
        if Self.host.architecture == "amd64" {
            try? FileManager.default.removeItem(atPath: fixture.output)
            let i386 = Platform(os: "linux", architecture: "386")
            let old = try fixture.layout("i386", [(i386, i386)], top: .manifests)
            try "FROM base\nRUN true\n".write(
                toFile: fixture.context + "/Dockerfile", atomically: true, encoding: .utf8)
            let built = try fixture.build(["--platform", "linux/386"] + Self.context("base", old))
            #expect(built.status == 0, "\(built.standardError)")
        }
    }
}
