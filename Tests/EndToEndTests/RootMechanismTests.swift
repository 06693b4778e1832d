import Foundation
import Hermetic
import TestSupport
import Testing

/// A RUN step's root is an overlay, or a copy of the stage's filesystem where overlayfs cannot be
/// mounted (`HERMETIC_RUN_ROOT=copy` forces it): both must give the same layers, byte for byte.
@Suite(.serialized) struct RootMechanismTests {
    static let dockerfile = """
        FROM base AS changes
        RUN mkdir -p /data/keep /data/gone/deep /data/refill/sub && echo a > /data/keep/a && echo b > /data/gone/deep/b \\
            && echo c > /data/refill/c && echo d > /data/refill/sub/d && echo same > /data/same \\
            && ln /data/keep/a /data/keep/a-link && mkfifo /data/fifo && ln -s keep/a /data/sym
        RUN rm -rf /data/gone /data/refill && mkdir -p /data/refill/sub && echo d > /data/refill/sub/d2 \\
            && echo more >> /data/keep/a && chmod 0600 /data/same && ln -sfn gone /data/sym && touch -d @1000 /data/keep
        RUN cat /data/same > /dev/null && chmod 0600 /data/same && sh -c 'exec 3>>/data/same' && chown 0:0 /data/same
        WORKDIR /home/app/new/dir
        RUN echo here > file && ln file file-link
        RUN --mount=type=cache,target=/var/cache/c --mount=type=tmpfs,target=/scratch/t echo x > /var/cache/c/x \\
            && cat /etc/resolv.conf > /dev/null && ls /proc/self > /dev/null
        RUN rm -rf /data/keep && echo now-a-file > /data/keep && rm /etc/hostname
        RUN rm /data/keep && mkdir /data/keep && echo y > /data/keep/y && chown -R 1000:1000 /data/keep
        FROM scratch
        COPY --from=changes /data/ /data/
        COPY --from=changes /home/app/ /app/
        """

    struct Build {
        var scratch: TemporaryDirectory
        var context: String
        var baseDigest: Digest

        init() throws {
            scratch = try TemporaryDirectory(prefix: "root-mechanism-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try RootMechanismTests.dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            // The image's /etc/resolv.conf is a symlink out of the root and its /proc a file: the copy's
            // mountpoints replace both for the step and put them back.
            let entries =
                try BaseImages.busyboxEntries() + [
                    LayerEntry(
                        path: "etc/resolv.conf", kind: .symlink(target: "../../../host-resolv"), mode: 0o777,
                        mtime: 1_600_000_000),
                    LayerEntry(path: "proc", kind: .regular(.bytes(Array("a file\n".utf8))), mode: 0o644, mtime: 5),
                ]
            baseDigest = try BaseImages.writeLayout(at: scratch.path + "/base", entries: entries, platform: .host)
        }

        func run(
            _ mechanism: String, output: String, target: String? = nil, environment: [String: String] = [:]
        ) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "plain", "--source-date-epoch", "1700000000",
                    "--state-dir", scratch.path + "/state-" + output,
                    "--build-context", "base=oci-layout://\(scratch.path)/base@\(baseDigest)",
                    "-o", "type=oci,dest=\(scratch.path)/\(output).oci", "--iidfile", "\(scratch.path)/\(output).iid",
                ] + (target.map { ["--target", $0] } ?? []),
                environment: environment.merging(["HERMETIC_RUN_ROOT": mechanism]) { $1 })
        }

        func digest(_ output: String) -> String? {
            try? String(contentsOfFile: "\(scratch.path)/\(output).iid", encoding: .utf8)
        }

        /// The layers of the image in `output` (one platform), decompressed with gzip.
        func layers(_ output: String) throws -> [[UInt8]] {
            let layout = scratch.path + "/" + output + ".oci"
            func json(_ digest: String) throws -> [String: Any] {
                let path = layout + "/blobs/sha256/" + digest.dropFirst("sha256:".count)
                return try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))
                    as? [String: Any] ?? [:]
            }
            let manifestDigest = try #require(self.digest(output))
            var manifest = try json(manifestDigest)
            if let images = manifest["manifests"] as? [[String: Any]] {
                // The image index: the image, not its attestation manifest (platform unknown/unknown).
                let image = images.first { ($0["platform"] as? [String: Any])?["os"] as? String != "unknown" }
                manifest = try json(try #require(image?["digest"] as? String))
            }
            let layers = manifest["layers"] as? [[String: Any]] ?? []
            return try layers.map { layer in
                let blob = layout + "/blobs/sha256/" + (layer["digest"] as? String ?? "").dropFirst("sha256:".count)
                let outcome = try HermeticProcess.run(try ExternalTools.require("gzip"), ["-dc", blob])
                try #require(outcome.status == 0, "\(outcome.standardError)")
                return Array(outcome.standardOutput.utf8)
            }
        }
    }

    @Test func copyGivesTheOverlayLayers() throws {
        let build = try Build()
        let overlay = try build.run("overlay", output: "overlay", target: "changes")
        try #require(overlay.status == 0, "\(overlay.standardError)")
        let copy = try build.run("copy", output: "copy", target: "changes")
        try #require(copy.status == 0, "\(copy.standardError)")
        #expect(build.digest("overlay")?.hasPrefix("sha256:") == true)
        #expect(build.digest("copy") == build.digest("overlay"))

        let layers = try build.layers("copy")
        // The base, then one layer per RUN that changed something: the third RUN (read, chmod to the mode it
        // has, open for append, chown to the owner it has) changed nothing and has none.
        #expect(layers.count == 1 + 6, "\(layers.count) layers")
        func has(_ layer: [UInt8], _ name: String) -> Bool {
            let needle = Array(name.utf8)
            return layer.count >= needle.count
                && (0...(layer.count - needle.count)).contains { layer[$0..<($0 + needle.count)].elementsEqual(needle) }
        }
        guard layers.count == 7 else { return }
        let second = layers[2]
        #expect(has(second, "data/.wh.gone"))
        #expect(has(second, "data/refill/.wh.c"))
        #expect(has(second, "data/refill/sub/.wh.d"))
        #expect(!layers.contains { has($0, ".wh..wh..opq") })
        // Mountpoints made for the step are in no layer; the image's symlink and file came back.
        #expect(!layers.dropFirst().contains { has($0, "var/cache/c") || has($0, "scratch/t") })
        #expect(!layers.dropFirst().contains { has($0, "etc/resolv.conf") || has($0, "\0proc") })
    }

    @Test func bothMechanismsGiveTheSameFinalImage() throws {
        let build = try Build()
        let overlay = try build.run("overlay", output: "overlay")
        try #require(overlay.status == 0, "\(overlay.standardError)")
        let copy = try build.run("copy", output: "copy")
        try #require(copy.status == 0, "\(copy.standardError)")
        #expect(build.digest("copy") == build.digest("overlay"))
        let automatic = try build.run("auto", output: "auto")
        try #require(automatic.status == 0, "\(automatic.standardError)")
        #expect(build.digest("auto") == build.digest("overlay"))
        #expect(!automatic.standardError.contains("overlayfs cannot be mounted"))
    }

    @Test func whereOverlayCannotBeMountedTheBuildFallsBackToACopy() throws {
        let build = try Build()
        let overlay = try build.run("overlay", output: "overlay")
        try #require(overlay.status == 0, "\(overlay.standardError)")
        let broken = ["HERMETIC_TEST_FAIL_OVERLAY": "1"]
        // Forced overlay: the failed mount is the step's error.
        let refused = try build.run("overlay", output: "refused", environment: broken)
        #expect(refused.status == 1)
        #expect(refused.standardError.contains("RUN could not start: sandbox: step failed at mount overlay"))
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/refused.oci"))
        // Automatic: one warning, then every step on a copy, and the image the overlay gave.
        let fallback = try build.run("auto", output: "fallback", environment: broken)
        try #require(fallback.status == 0, "\(fallback.standardError)")
        let warnings = fallback.standardError.split(separator: "\n").filter { $0.hasPrefix("warning: ") }
        #expect(warnings.count == 1, "\(fallback.standardError)")
        #expect(warnings.first?.contains("overlayfs cannot be mounted here") == true)
        #expect(build.digest("fallback") == build.digest("overlay"))
    }

    /// On a copied root the step has the tree the builder then cleans up: a step that swaps a mountpoint's
    /// parent for a symlink to a host directory must not make the builder remove or move host files.
    @Test func aSwappedMountpointParentLeadsNowhereOnTheHost() throws {
        let build = try Build()
        let canary = build.scratch.path + "/host-etc"
        try FileManager.default.createDirectory(atPath: canary, withIntermediateDirectories: true)
        for name in ["hosts", "resolv.conf"] {
            try "host \(name)\n".write(toFile: canary + "/" + name, atomically: true, encoding: .utf8)
        }
        try """
        FROM base
        RUN mv /etc /etc.moved && ln -s \(canary) /etc
        """.write(toFile: build.context + "/Dockerfile", atomically: true, encoding: .utf8)
        let outcome = try build.run("copy", output: "swapped")
        #expect(outcome.status == 0, "\(outcome.standardError)")
        for name in ["hosts", "resolv.conf"] {
            #expect(
                (try? String(contentsOfFile: canary + "/" + name, encoding: .utf8)) == "host \(name)\n",
                "host file \(name) was changed")
        }
        #expect(Set((try? FileManager.default.contentsOfDirectory(atPath: canary)) ?? []) == ["hosts", "resolv.conf"])
    }

    @Test func aWorkspaceOverlayfsCannotNameRunsOnACopy() throws {
        let build = try Build()
        let overlay = try build.run("overlay", output: "overlay")
        try #require(overlay.status == 0, "\(overlay.standardError)")
        let odd = build.scratch.path + "/tmp,with:odd"
        try FileManager.default.createDirectory(atPath: odd, withIntermediateDirectories: true)
        let automatic = try build.run("auto", output: "odd", environment: ["TMPDIR": odd])
        try #require(automatic.status == 0, "\(automatic.standardError)")
        #expect(build.digest("odd") == build.digest("overlay"))
        let warnings = automatic.standardError.split(separator: "\n").filter { $0.hasPrefix("warning: ") }
        #expect(warnings.count == 1 && warnings[0].contains("overlayfs options cannot hold"), "\(warnings)")
        // Forced overlay cannot: one error line.
        let forced = try build.run("overlay", output: "odd-forced", environment: ["TMPDIR": odd])
        #expect(forced.status == 1)
        #expect(forced.standardError.contains("contains ':', ',', '\\' or a newline"), "\(forced.standardError)")
    }

    @Test func anUnknownMechanismIsOneLine() throws {
        let build = try Build()
        let outcome = try build.run("vfs", output: "bad")
        #expect(outcome.status != 0)
        #expect(outcome.standardError == "error: HERMETIC_RUN_ROOT \"vfs\": must be auto, overlay or copy\n")
    }
}
