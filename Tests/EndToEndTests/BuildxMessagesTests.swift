import Foundation
import Hermetic
import TestSupport
import Testing

/// The messages a buildx user expects (issue 16 §4), through the real binary on a busybox base.
@Suite(.serialized) struct BuildxMessagesTests {
    struct Build {
        var scratch: TemporaryDirectory
        var context: String
        var baseDigest: Digest

        init(_ dockerfile: String) throws {
            scratch = try TemporaryDirectory(prefix: "messages-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            baseDigest = try BaseImages.writeBusybox(at: scratch.path + "/busybox")
        }

        /// `hermetic build` with the busybox context and `extra` (outputs included: none unless given).
        func run(_ extra: [String]) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "plain", "--state-dir", scratch.path + "/state",
                    "--build-context", "busybox=oci-layout://\(scratch.path)/busybox@\(baseDigest)",
                ] + extra)
        }

        /// The error line: the last line of stderr.
        static func errorLine(_ outcome: HermeticProcess.Outcome) -> String {
            outcome.standardError.split(separator: "\n").last.map(String.init) ?? ""
        }
    }

    /// `-o type=bogus,dest=x` is about the type, not its keys; a known type names its unknown keys.
    @Test func outputTypeIsCheckedBeforeItsKeys() throws {
        let build = try Build("FROM busybox\n")
        let expectations: [(String, String)] = [
            (
                "type=registry,dest=x",
                "error: --output \"type=registry,dest=x\": unknown key \"dest\" for type=registry (its keys: name, push)"
            ),
            (
                "type=image,push=true",
                "error: --output \"type=image,push=true\": nothing to push to: name the image with -t REG/REPO:TAG "
                    + "(or name=)"
            ),
            (
                "type=bogus,dest=x",
                "error: --output \"type=bogus,dest=x\": unknown type \"bogus\" (supported: oci, docker, local, image, "
                    + "registry)"
            ),
            (
                "type=oci,dest=\(build.scratch.path)/o,name=x",
                "error: --output \"type=oci,dest=\(build.scratch.path)/o,name=x\": unknown key \"name\" for type=oci "
                    + "(its keys: dest, tar, compression, compression-level, force-compression; the image is named "
                    + "with -t)"
            ),
            (
                "type=local,push=true,compression=zstd",
                "error: --output \"type=local,push=true,compression=zstd\": unknown keys \"compression\", \"push\" "
                    + "for type=local (its keys: dest, tar)"
            ),
            ("type=docker", "error: --output \"type=docker\": dest= is required"),
        ]
        for (output, expected) in expectations {
            let outcome = try build.run(["-o", output])
            #expect(outcome.status != 0, "\(output)")
            #expect(Build.errorLine(outcome) == expected, "\(outcome.standardError)")
        }
    }

    /// Without `-o` the image is built and nothing is written: say so, as buildx does; with one, nothing.
    @Test func noOutputWarns() throws {
        let build = try Build("FROM busybox\nRUN echo built > /built\n")
        let warning =
            "warning: No output specified: the image is built and its digest printed, but nothing is written. To "
            + "write it use -o type=oci,dest=DIR (or type=oci,dest=FILE.tar, type=docker,dest=FILE.tar, "
            + "type=local,dest=DIR)"
        let bare = try build.run([])
        #expect(bare.status == 0, "\(bare.standardError)")
        #expect(bare.standardError.split(separator: "\n").contains { $0 == warning }, "\(bare.standardError)")
        #expect(bare.standardOutput.hasPrefix("sha256:"))
        let quiet = try build.run(["--progress", "quiet"])
        #expect(quiet.standardError == warning + "\n", "warnings stay in quiet mode: \(quiet.standardError)")
        let written = try build.run(["-o", "type=oci,dest=\(build.scratch.path)/layout"])
        #expect(written.status == 0, "\(written.standardError)")
        #expect(!written.standardError.contains("No output specified"), "\(written.standardError)")
        #expect(written.standardOutput == bare.standardOutput)
    }

    /// BuildKit's suggest.Search: Levenshtein distance under 3, the answer in the word's case.
    @Test func unknownInstructionSuggestsTheNearest() throws {
        let expectations: [(String, String)] = [
            ("COPPY", "error: Dockerfile:2: unknown instruction: COPPY (did you mean COPY?)"),
            ("coppy", "error: Dockerfile:2: unknown instruction: coppy (did you mean copy?)"),
            ("Coppy", "error: Dockerfile:2: unknown instruction: Coppy (did you mean copy?)"),
            ("ENTRYPONT", "error: Dockerfile:2: unknown instruction: ENTRYPONT (did you mean ENTRYPOINT?)"),
            ("WROKDIR", "error: Dockerfile:2: unknown instruction: WROKDIR (did you mean WORKDIR?)"),
            ("FROBNICATE", "error: Dockerfile:2: unknown instruction: FROBNICATE"),
            ("FOO", "error: Dockerfile:2: unknown instruction: FOO (did you mean FROM?)"),
            ("BUILD", "error: Dockerfile:2: unknown instruction: BUILD (did you mean ONBUILD?)"),
        ]
        for (keyword, expected) in expectations {
            let build = try Build("FROM busybox\n\(keyword) a b\n")
            let outcome = try build.run(["-o", "type=oci,dest=\(build.scratch.path)/layout"])
            #expect(outcome.status == 1, "\(keyword)")
            #expect(Build.errorLine(outcome) == expected, "\(outcome.standardError)")
        }
    }

    static let offlineNote =
        "; it had no network (Hermetic's default; grant the host's with RUN --network=host and hermetic build "
        + "--allow network.host)"

    /// A step that fails without network says it had none and how to grant it; `--network=none` asked for it.
    @Test func failedStepWithoutNetworkSaysSo() throws {
        let build = try Build("FROM busybox\nRUN ip -o link | grep -v ' lo:' | grep . || exit 7\n")
        let outcome = try build.run(["-o", "type=oci,dest=\(build.scratch.path)/layout"])
        #expect(outcome.status == 1)
        #expect(
            Build.errorLine(outcome)
                == "error: Dockerfile:2: RUN: process \"/bin/sh -c ip -o link | grep -v ' lo:' | grep . || exit 7\" "
                + "did not complete successfully: exit code: 7" + Self.offlineNote,
            "\(outcome.standardError)")

        let asked = try Build("FROM busybox\nRUN --network=none exit 3\n")
        let askedOutcome = try asked.run(["-o", "type=oci,dest=\(asked.scratch.path)/layout"])
        #expect(
            Build.errorLine(askedOutcome)
                == "error: Dockerfile:2: RUN: process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3",
            "\(askedOutcome.standardError)")
    }

    /// BuildKit's `--network=default` has outbound access; Hermetic has no such network, so it is refused
    /// before the step runs, with the way to get the host's.
    @Test func networkDefaultIsRefused() throws {
        let build = try Build("FROM busybox\nRUN --network=default touch /ran\n")
        let outcome = try build.run(["-o", "type=local,dest=\(build.scratch.path)/root"])
        #expect(outcome.status == 1)
        #expect(
            Build.errorLine(outcome)
                == "error: Dockerfile:2: RUN --network=default: Hermetic steps have no network (use --network=none, "
                + "or RUN --network=host with hermetic build --allow network.host)",
            "\(outcome.standardError)")
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/root/ran"))
    }

    /// A heredoc RUN's history carries its script, whatever runs it (the shell, a `#!` file, a command
    /// reading the heredoc): BuildKit records `/bin/sh -c SCRIPT` for `RUN <<EOF`; ours is the source text.
    @Test func heredocRunHistoryCarriesTheScript() throws {
        let build = try Build(
            """
            FROM busybox
            ARG GREETING=hi
            RUN <<EOF
            echo one > /one
            echo "$GREETING" > /two
            EOF
            RUN <<'RUNME'
            #!/bin/sh
            echo shebang > /three
            RUNME
            RUN cat <<A > /four && cat <<-B > /five
            four
            A
            \tfive
            \tB
            RUN --network=none echo plain > /six

            """)
        let outcome = try build.run(["-o", "type=oci,dest=\(build.scratch.path)/layout", "--provenance", "false"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let skopeo = try ExternalTools.require("skopeo")
        let inspected = try HermeticProcess.run(
            skopeo, ["inspect", "--config", "--raw", "oci:\(build.scratch.path)/layout"])
        try #require(inspected.status == 0, "skopeo: \(inspected.standardError)")
        let config = try #require(
            try JSONSerialization.jsonObject(with: Data(inspected.standardOutput.utf8)) as? [String: Any])
        let history = (config["history"] as? [[String: Any]] ?? []).compactMap { $0["created_by"] as? String }
        #expect(
            history == [
                "test base image", "ARG GREETING=hi",
                "RUN <<EOF # build args: GREETING\necho one > /one\necho \"$GREETING\" > /two\nEOF",
                "RUN <<'RUNME' # build args: GREETING\n#!/bin/sh\necho shebang > /three\nRUNME",
                "RUN cat <<A > /four && cat <<-B > /five # build args: GREETING\nfour\nA\n\tfive\nB",
                "RUN --network=none echo plain > /six # build args: GREETING",
            ], "\(history)")
    }
}
