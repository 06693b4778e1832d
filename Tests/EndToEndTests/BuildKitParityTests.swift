import Foundation
import Hermetic
import TestSupport
import Testing

/// Points where an audit against BuildKit's dockerfile2llb (convert.go, image.go) found Hermetic
/// behaving otherwise, checked on real builds by the real binary; the image config is read by skopeo.
@Suite struct BuildKitParityTests {
    static let defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// One Dockerfile in a fresh context, with base images given as named contexts.
    struct Build {
        let scratch: TemporaryDirectory
        let context: String
        private var contexts: [String] = []

        init(_ dockerfile: String, files: [String: String] = [:]) throws {
            scratch = try TemporaryDirectory(prefix: "parity-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            for (name, text) in files {
                try text.write(toFile: context + "/" + name, atomically: true, encoding: .utf8)
            }
        }

        /// A named context `name`: an image of `entries` whose config Env is `env` (the default PATH when
        /// empty).
        mutating func addBase(
            _ name: String, entries: [LayerEntry] = BaseImages.goldenBaseEntries(), env: [String] = []
        ) throws {
            let digest = try BaseImages.writeLayout(at: scratch.path + "/" + name, entries: entries, env: env)
            contexts += ["--build-context", "\(name)=oci-layout://\(scratch.path)/\(name)@\(digest)"]
        }

        /// A named context `name` holding the busybox base (for RUN steps), its config Env `env` (the default
        /// PATH when empty).
        mutating func addBusybox(_ name: String = "busybox", env: [String] = []) throws {
            let digest = try BaseImages.writeLayout(
                at: scratch.path + "/" + name, entries: BaseImages.busyboxEntries(), env: env, platform: .host)
            contexts += ["--build-context", "\(name)=oci-layout://\(scratch.path)/\(name)@\(digest)"]
        }

        func run(_ extra: [String] = []) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "quiet", "--source-date-epoch", "1700000000",
                    "--state-dir", scratch.path + "/state", "--output", "type=oci,dest=\(scratch.path)/oci",
                    "--output", "type=local,dest=\(scratch.path)/fs",
                    // Named, so that skopeo picks the image beside its provenance's referrer in index.json.
                    "-t", "parity:1",
                ] + contexts + extra)
        }

        /// The built image's config blob as skopeo reads it from the layout (raw: its parsed form drops
        /// Docker's fields, such as OnBuild).
        func imageConfig() throws -> [String: Any] {
            let skopeo = try ExternalTools.require("skopeo")
            let inspected = try HermeticProcess.run(
                skopeo, ["inspect", "--config", "--raw", "oci:\(scratch.path)/oci:1"])
            try #require(inspected.status == 0, "skopeo: \(inspected.standardError)")
            let json = try JSONSerialization.jsonObject(with: Data(inspected.standardOutput.utf8))
            return try #require(json as? [String: Any])
        }

        /// The config's `config` object (what a container runs with).
        func containerConfig() throws -> [String: Any] {
            try imageConfig()["config"] as? [String: Any] ?? [:]
        }

        /// The `created_by` of each history entry, with whether it is marked `empty_layer`.
        func history() throws -> [(createdBy: String, empty: Bool)] {
            (try imageConfig()["history"] as? [[String: Any]] ?? []).map {
                ($0["created_by"] as? String ?? "", $0["empty_layer"] as? Bool ?? false)
            }
        }

        func file(_ path: String) -> String? {
            try? String(contentsOfFile: scratch.path + "/fs/" + path, encoding: .utf8)
        }
    }

    // MARK: Image config

    /// BuildKit's emptyImage: `FROM scratch` starts with WorkingDir "/" and the default PATH.
    @Test func scratchStartsAtTheRootDirectory() throws {
        let build = try Build("FROM scratch\nLABEL a=b\n")
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let container = try build.containerConfig()
        #expect(container["WorkingDir"] as? String == "/")
        #expect(container["Env"] as? [String] == [Self.defaultPath])
    }

    /// BuildKit's dispatchCmd sets ArgsEscaped for both forms; ENTRYPOINT does not, and an inherited value
    /// stays.
    @Test(arguments: [
        ("FROM scratch\nCMD [\"/bin/app\", \"x\"]\n", true),
        ("FROM scratch\nCMD /bin/app x\n", true),
        ("FROM scratch\nENTRYPOINT [\"/bin/app\"]\n", false),
        ("FROM scratch\nENTRYPOINT /bin/app\n", false),
        ("FROM scratch AS base\nCMD [\"x\"]\nFROM base\nENTRYPOINT [\"/bin/app\"]\n", true),
    ])
    func cmdSetsArgsEscaped(dockerfile: String, escaped: Bool) throws {
        let build = try Build(dockerfile)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let container = try build.containerConfig()
        #expect((container["ArgsEscaped"] as? Bool) == (escaped ? true : nil), "\(container)")
    }

    // MARK: History

    /// BuildKit's dispatchArg commits a history entry (no layer); ours is the source text, so a build
    /// arg's value stays out.
    @Test func argAddsAHistoryEntryWithoutItsValue() throws {
        let build = try Build("FROM scratch\nARG V=default\nARG A=1 B\nLABEL a=b\n")
        let outcome = try build.run(["--build-arg", "V=given-on-the-command-line"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let history = try build.history()
        #expect(history.map(\.createdBy) == ["ARG V=default", "ARG A=1 B", "LABEL a=b"])
        #expect(history.allSatisfy { $0.empty })
        let text = String(describing: try build.imageConfig())
        #expect(!text.contains("given-on-the-command-line"))
    }

    /// BuildKit's dispatchOnbuild stores the trigger and commits no history entry.
    @Test func onbuildAddsNoHistoryEntry() throws {
        let build = try Build("FROM scratch\nLABEL a=b\nONBUILD RUN echo later\nSTOPSIGNAL TERM\n")
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(try build.history().map(\.createdBy) == ["LABEL a=b", "STOPSIGNAL TERM"])
        #expect(try build.containerConfig()["OnBuild"] as? [String] == ["RUN echo later"])
    }

    // MARK: Build environment

    /// BuildKit's dispatchStages "make sure that PATH is always set": a base whose Env has no PATH gets the
    /// default, in the config and for expansion; one that has a PATH keeps it.
    @Test func aBaseWithoutPathGetsTheDefault() throws {
        var build = try Build("FROM nopath AS first\nLABEL path=$PATH\nFROM ownpath\nLABEL path=$PATH\n")
        try build.addBase("nopath", env: ["FOO=bar"])
        try build.addBase("ownpath", env: ["PATH=/opt/bin", "FOO=bar"])
        var outcome = try build.run(["--target", "first"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        var container = try build.containerConfig()
        #expect(container["Env"] as? [String] == ["FOO=bar", Self.defaultPath])
        #expect((container["Labels"] as? [String: String])?["path"] == String(Self.defaultPath.dropFirst(5)))
        outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        container = try build.containerConfig()
        #expect(container["Env"] as? [String] == ["PATH=/opt/bin", "FOO=bar"])
        #expect((container["Labels"] as? [String: String])?["path"] == "/opt/bin")
    }

    /// BuildKit's dispatchState.init: a stage built on another inherits its ARGs, names and values, for
    /// expansion, RUN and RUN's history.
    @Test func aStageInheritsTheArgsOfItsBaseStage() throws {
        var build = try Build(
            """
            FROM busybox AS base
            ARG V=from-base
            ARG GIVEN
            FROM base
            LABEL v=$V given=$GIVEN
            RUN echo -n "$V:$GIVEN" > /seen
            """)
        try build.addBusybox()
        let outcome = try build.run(["--build-arg", "GIVEN=cli"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(try build.containerConfig()["Labels"] as? [String: String] == ["v": "from-base", "given": "cli"])
        #expect(build.file("seen") == "from-base:cli")
        #expect(try build.history().last?.createdBy == "RUN echo -n \"$V:$GIVEN\" > /seen # build args: V GIVEN")
    }

    /// BuildKit's dispatchArg adds an ARG's value to the build environment (`AddEnv`), not to the config: it
    /// shadows the base's ENV and an earlier ENV for expansion and RUN, and a later ENV wins again.
    @Test func argShadowsEnvForExpansionAndRunButNotInTheConfig() throws {
        var build = try Build(
            """
            FROM busybox
            ARG NAME=from-arg
            LABEL a=$NAME
            RUN echo -n $NAME > /a
            ENV NAME2=from-env
            ARG NAME2=from-second-arg
            LABEL b=$NAME2
            ENV NAME3=from-env
            ARG NAME3
            ENV NAME2=from-env-again
            LABEL c=$NAME2 d=$NAME3
            RUN echo -n $NAME:$NAME2:$NAME3 > /b
            """)
        try build.addBusybox(env: [Self.defaultPath, "NAME=from-image"])
        let outcome = try build.run(["--build-arg", "NAME3=from-cli"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let container = try build.containerConfig()
        #expect(
            container["Labels"] as? [String: String] == [
                "a": "from-arg", "b": "from-second-arg", "c": "from-env-again", "d": "from-cli",
            ])
        #expect(build.file("a") == "from-arg")
        #expect(build.file("b") == "from-arg:from-env-again:from-cli")
        #expect(
            container["Env"] as? [String] == [
                Self.defaultPath, "NAME=from-image", "NAME2=from-env-again", "NAME3=from-env",
            ])
        #expect(try build.history().last?.createdBy == "RUN echo -n $NAME:$NAME2:$NAME3 > /b # build args: NAME NAME3")
    }

    /// BuildKit's dispatchArg adds nothing for an ARG without a value, a build arg or a global value, so the
    /// name keeps its earlier value; with a global value it takes that one.
    @Test func argWithoutAValueKeepsTheEarlierValue() throws {
        let build = try Build(
            "ARG G=global\nFROM scratch\nARG X=1\nARG X\nARG G=stage\nARG G\nLABEL x=$X g=$G\n")
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(try build.containerConfig()["Labels"] as? [String: String] == ["x": "1", "g": "global"])
    }

    // MARK: Errors

    static let copyFromVariable =
        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"

    /// BuildKit refuses variables in `--from` in every stage, needed or not (COPY: toCommand; RUN --mount:
    /// parseMount), and in an ONBUILD trigger (at the FROM that runs it).
    @Test(arguments: [
        (
            "FROM scratch AS unneeded\nARG SRC=x\nCOPY --from=$SRC a b\nFROM scratch\nLABEL a=b\n",
            "Dockerfile:3: \(copyFromVariable)"
        ),
        ("FROM scratch AS base\nONBUILD COPY --from=${SRC} a b\nFROM base\n", "Dockerfile:3: \(copyFromVariable)"),
        (
            "FROM scratch AS unneeded\nRUN --mount=type=bind,from=$SRC,target=/x true\nFROM scratch\n",
            "Dockerfile:2: 'from' doesn't support variable expansion, define alias stage instead"
        ),
    ])
    func fromRefusesVariables(dockerfile: String, error: String) throws {
        let build = try Build(dockerfile)
        let outcome = try build.run()
        #expect(outcome.status == 1)
        #expect(outcome.standardError == "error: \(error)\n")
    }

    /// BuildKit dispatches stages in file order: a needed stage that copies from a later one fails before
    /// anything is built.
    @Test func copyFromALaterStageIsAnError() throws {
        let build = try Build(
            "FROM scratch AS first\nCOPY --from=later /f /f\nFROM scratch AS later\nCOPY f /f\nFROM first\n",
            files: ["f": "f"])
        let outcome = try build.run()
        #expect(outcome.status == 1)
        #expect(
            outcome.standardError
                == "error: Dockerfile:2: cannot copy from stage \"later\", it needs to be defined before current stage \"first\"\n"
        )
    }

    // MARK: Ownership

    /// BuildKit's readUser: `--chown=NAME` takes the gid of NAME's passwd entry, a number is its own gid, and
    /// WORKDIR's mkdir reads the current USER the same way.
    @Test func ownersAreReadAsBuildKitsReadUserReadsThem() throws {
        var build = try Build(
            """
            FROM base
            COPY --chown=bob a.txt /by-name
            COPY --chown=1001 a.txt /by-number
            COPY --chown=bob:nogroup a.txt /with-group
            USER 1001
            WORKDIR /numeric
            USER bob
            WORKDIR /named
            """, files: ["a.txt": "a"])
        let passwd = "root:x:0:0:root:/root:/bin/sh\nbob:x:1001:50:Bob:/home/bob:/bin/sh\n"
        var entries = BaseImages.goldenBaseEntries().filter { $0.path != "etc/passwd" }
        entries.append(
            LayerEntry(
                path: "etc/passwd", kind: .regular(.bytes(Array(passwd.utf8))), mode: 0o644, mtime: 1_600_000_000))
        try build.addBase("base", entries: entries)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let expected = [
            "by-name": "1001:50", "by-number": "1001:1001", "with-group": "1001:65534", "numeric": "1001:1001",
            "named": "1001:50",
        ]
        for (path, owner) in expected {
            var info = stat()
            #expect(lstat(build.scratch.path + "/fs/" + path, &info) == 0, "\(path)")
            #expect("\(info.st_uid):\(info.st_gid)" == owner, "\(path)")
        }
    }
}
