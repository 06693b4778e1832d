import Testing

@testable import Hermetic

/// ARG scoping, the stage graph and its errors, as BuildKit's dockerfile2llb plans a build.
@Suite struct PlannerTests {
    static let platformArguments = [
        "BUILDPLATFORM": "linux/amd64", "BUILDARCH": "amd64", "TARGETPLATFORM": "linux/arm64",
        "TARGETOS": "linux",
        "TARGETARCH": "arm64",
    ]

    func plan(_ text: String, buildArgs: [String: String] = [:], target: String? = nil) throws
        -> BuildPlan
    {
        let dockerfile = try DockerfileParser.parse(Array(text.utf8), file: "Dockerfile")
        return try Planner(
            dockerfile: dockerfile, buildArguments: buildArgs, predefinedArguments: Self.platformArguments
        )
        .plan(target: target)
    }

    /// The description of the error planning throws, or a note that it did not throw.
    func failure(_ text: String, buildArgs: [String: String] = [:], target: String? = nil) -> String {
        do {
            let result = try plan(text, buildArgs: buildArgs, target: target)
            return "planned, order \(result.buildOrder)"
        } catch {
            return "\(error)"
        }
    }

    /// A RUN line whose mount target `${PROBE:?WORD}` stops planning with WORD expanded as the message: how
    /// the tests see what the planner's scope holds at that line (`--from` takes no variables).
    static func probe(_ word: String) -> String { "RUN --mount=type=tmpfs,target=/${PROBE:?[\(word)]} true\n" }

    /// The expansion a `probe` in `text` reported.
    func seen(_ text: String, buildArgs: [String: String] = [:]) -> String {
        let message = failure(text, buildArgs: buildArgs)
        guard let range = message.range(of: "PROBE: ") else { return "no probe: \(message)" }
        return String(message[range.upperBound...])
    }

    // MARK: ARG scoping

    @Test func globalArgIsSeenByFromOnly() throws {
        let text = "ARG BASE=alpine:3.19\nARG SRC=helper\nFROM $BASE\n"
        let result = try plan(text)
        #expect(result.stages[0].base == .image("alpine:3.19"))
        #expect(result.globalArguments.map(\.name) == ["BASE", "SRC"])
        #expect(result.globalArguments.map(\.value) == ["alpine:3.19", "helper"])
        #expect(seen(text + Self.probe("${SRC:-unset}")) == "[unset]")
    }

    @Test func redeclaredGlobalArgTakesTheGlobalValue() throws {
        #expect(seen("ARG SRC=helper\nFROM alpine\nARG SRC\n" + Self.probe("$SRC")) == "[helper]")
    }

    @Test func stageDefaultOverridesGlobalValue() throws {
        #expect(seen("ARG SRC=helper\nFROM alpine\nARG SRC=local\n" + Self.probe("$SRC")) == "[local]")
    }

    @Test func buildArgOverridesDefaultsEverywhere() throws {
        let text = "ARG BASE=alpine\nFROM $BASE\nARG SRC=local\n"
        let result = try plan(text, buildArgs: ["BASE": "debian", "SRC": "given"])
        #expect(result.stages[0].base == .image("debian"))
        #expect(result.unusedBuildArguments.isEmpty)
        #expect(seen(text + Self.probe("$SRC"), buildArgs: ["BASE": "debian", "SRC": "given"]) == "[given]")
    }

    /// BuildKit's dispatchArg sets an ARG's value in the build environment: it shadows an earlier ENV, and a
    /// later ENV wins again.
    @Test func argShadowsAnEarlierEnvAndALaterEnvWins() throws {
        let text = "FROM alpine\nENV SRC=fromenv\nARG SRC=fromarg\n" + Self.probe("$SRC")
        #expect(seen(text, buildArgs: ["SRC": "frombuildarg"]) == "[frombuildarg]")
        #expect(seen(text) == "[fromarg]")
        #expect(seen("FROM alpine\nARG SRC=fromarg\nENV SRC=fromenv\n" + Self.probe("$SRC")) == "[fromenv]")
    }

    @Test func argIsVisibleOnlyAfterItsDeclaration() throws {
        #expect(seen("FROM alpine\n" + Self.probe("${SRC:-early}") + "ARG SRC=late\n") == "[early]")
    }

    @Test func argsDoNotCarryIntoTheNextStage() throws {
        #expect(seen("FROM alpine\nARG SRC=first\nFROM alpine\n" + Self.probe("${SRC:-none}")) == "[none]")
    }

    @Test func envCarriesIntoAStageBuiltOnIt() throws {
        #expect(seen("FROM alpine AS base\nENV SRC=inherited\nFROM base\n" + Self.probe("$SRC")) == "[inherited]")
    }

    /// A stage built on another expands with that stage's ARGs (BuildKit's dispatchState.init).
    @Test func argsCarryIntoAStageBuiltOnIt() throws {
        #expect(seen("FROM alpine AS base\nARG DIR=/cache\nFROM base\n" + Self.probe("$DIR")) == "[/cache]")
    }

    @Test func globalDefaultsSeeEarlierGlobals() throws {
        let result = try plan("ARG A=x\nARG B=${A}y\nFROM img-$B\n")
        #expect(result.stages[0].base == .image("img-xy"))
    }

    @Test func predefinedPlatformArgsInFromAndDeclaredInStage() throws {
        let text = """
            FROM --platform=$BUILDPLATFORM golang AS build
            ARG TARGETARCH
            FROM base-${TARGETOS}

            """
        let result = try plan(text)
        #expect(result.stages[0].platform == "linux/amd64")
        #expect(result.stages[1].base == .image("base-linux"))
        #expect(seen(text + Self.probe("${TARGETARCH:-undeclared}")) == "[undeclared]")
        #expect(seen(text + "ARG TARGETARCH\n" + Self.probe("tools-$TARGETARCH")) == "[tools-arm64]")
    }

    /// BuildKit's toCommand: a COPY `--from` that expansion would change is refused, in every stage, needed
    /// or not; a RUN mount's `from=` may hold no `$` before its last character (parseMount).
    @Test(arguments: [
        "COPY --from=$SRC a b", "COPY --from=${SRC:-x} a b", "COPY --from=tools-$TARGETARCH a b",
        "COPY --from=\"$SRC\" a b",
    ])
    func copyFromRefusesVariables(line: String) {
        let message =
            "Dockerfile:3: variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
        #expect(failure("FROM alpine AS unneeded\nARG SRC=x\n\(line)\nFROM alpine\n") == message)
    }

    @Test func runMountFromRefusesVariables() {
        let message = "Dockerfile:2: 'from' doesn't support variable expansion, define alias stage instead"
        #expect(failure("FROM alpine\nRUN --mount=type=bind,From=$X,target=/x true\n") == message)
        #expect(failure("FROM alpine\nRUN --mount=target=/x,from=a${X} true\n") == message)
        // A `$` as the last character is no variable (parseMount's rule).
        let last = try? plan("FROM alpine\nRUN --mount=type=bind,from=a$,target=/x true\n")
        #expect(last?.stages[0].mountSources["0:0"] == .image("a$"))
    }

    @Test func globalArgWithoutDefaultKeepsThePredefinedValue() throws {
        let result = try plan("ARG TARGETARCH\nFROM img-$TARGETARCH\n")
        #expect(result.stages[0].base == .image("img-arm64"))
        #expect(result.globalArguments.first?.value == "arm64")
    }

    @Test func predefinedArgCanBeOverriddenByABuildArg() throws {
        let result = try plan(
            "ARG TARGETARCH\nFROM img-$TARGETARCH\n", buildArgs: ["TARGETARCH": "riscv64"])
        #expect(result.stages[0].base == .image("img-riscv64"))
    }

    // MARK: Stage graph

    @Test func stagesByNameIndexAndFrom() throws {
        let text = """
            FROM alpine AS Builder
            FROM scratch AS other
            FROM builder AS final
            COPY --from=BUILDER /a /a
            COPY --from=1 /b /b
            COPY --from=scratch /c /c
            COPY --from=busybox:1.36 /d /d
            """
        let result = try plan(text)
        #expect(result.stages.map(\.name) == ["builder", "other", "final"])
        #expect(result.stages[0].base == .image("alpine"))
        #expect(result.stages[1].base == .scratch)
        #expect(result.stages[2].base == .stage(0))
        #expect(
            result.stages[2].sources == [
                0: .stage(0), 1: .stage(1), 2: .scratch, 3: .image("busybox:1.36"),
            ])
        #expect(result.stages[2].dependencies == [0, 1])
        #expect(result.target == 2)
        #expect(result.buildOrder == [0, 1, 2])
        #expect(result.stages[1].displayName == "other")
    }

    @Test func fromALaterStageNameIsAnImage() throws {
        let result = try plan("FROM later\nFROM alpine AS later\n", target: nil)
        #expect(result.stages[0].base == .image("later"))
    }

    @Test func targetBuildsOnlyWhatItNeeds() throws {
        let text = """
            FROM alpine AS a
            FROM alpine AS b
            FROM a AS c
            COPY --from=b x y
            FROM alpine AS d
            """
        #expect(try plan(text).buildOrder == [3])
        #expect(try plan(text, target: "C").buildOrder == [0, 1, 2])
        #expect(try plan(text, target: "c").target == 2)
        #expect(try plan(text, target: "b").buildOrder == [1])
    }

    @Test func unreachableBrokenStageIsNotPlanned() throws {
        let text = """
            FROM alpine AS broken
            ARG X=${
            COPY --from=9 a b
            FROM alpine AS good
            RUN true
            """
        let result = try plan(text, target: "good")
        #expect(result.buildOrder == [1])
        #expect(failure(text, target: "broken").hasPrefix("Dockerfile:2: "))
    }

    @Test func unnamedStagesAreNamedByIndexInMessages() throws {
        let result = try plan("FROM alpine\nFROM scratch\n")
        #expect(result.stages.map(\.displayName) == ["stage-0", "stage-1"])
        #expect(result.buildOrder == [1])
    }

    @Test func cyclesAreErrors() {
        let twoStages = "FROM alpine AS a\nCOPY --from=b x y\nFROM alpine AS b\nCOPY --from=a x y\n"
        // The stage named is where the walk from the target comes back to: the target itself here.
        #expect(failure(twoStages) == "Dockerfile:3: circular dependency detected on stage: b")
        #expect(
            failure(twoStages, target: "a") == "Dockerfile:1: circular dependency detected on stage: a")
        #expect(
            failure("FROM alpine AS a\nCOPY --from=a x y\n")
                == "Dockerfile:2: circular dependency detected on stage: a")
        #expect(
            failure("FROM alpine\nCOPY --from=0 x y\n")
                == "Dockerfile:2: circular dependency detected on stage: 0")
    }

    /// BuildKit dispatches stages in file order: COPY from a stage defined later fails when the stage that
    /// copies is needed, named as BuildKit names stages (`stage-N` when unnamed).
    /// BuildKit's dispatchRunMounts: a RUN mount from a stage not yet dispatched fails the same way.
    @Test func mountFromALaterStageIsAnError() {
        let text = "FROM alpine AS a\nRUN --mount=type=bind,from=b,target=/src true\nFROM alpine AS b\n"
        #expect(
            failure(text, target: "a")
                == "Dockerfile:2: cannot mount from stage \"b\" to \"/src\", stage needs to be defined before current command"
        )
        #expect(failure(text) == "planned, order [1]")
    }

    @Test func copyFromALaterStageIsAnError() {
        let text = "FROM alpine AS a\nCOPY --from=B x y\nFROM alpine AS b\n"
        #expect(
            failure(text, target: "a")
                == "Dockerfile:2: cannot copy from stage \"B\", it needs to be defined before current stage \"a\"")
        #expect(failure(text) == "planned, order [1]")
        let unnamed = "FROM alpine\nCOPY --from=1 x y\nFROM alpine\nFROM alpine\nCOPY --from=0 x y\n"
        #expect(
            failure(unnamed)
                == "Dockerfile:2: cannot copy from stage \"1\", it needs to be defined before current stage \"stage-0\""
        )
    }

    @Test func stageIndexOutOfRange() {
        #expect(
            failure("FROM alpine\nCOPY --from=3 x y\n")
                == "Dockerfile:2: invalid stage index 3: the Dockerfile has 1 stage(s)")
        #expect(failure("FROM alpine\nCOPY --from=-1 x y\n") == "Dockerfile:2: invalid stage index -1")
    }

    @Test func unknownTarget() {
        #expect(
            failure("FROM alpine AS a\n", target: "nope")
                == "--target \"nope\": target stage \"nope\" could not be found in Dockerfile"
        )
    }

    @Test func duplicateStageNamesAreErrors() {
        #expect(
            failure("FROM alpine AS a\nFROM alpine AS A\n") == "Dockerfile:2: duplicate stage name \"A\"")
    }

    @Test(arguments: ["1abc", "a/b", "-a", "a:b", "_a", "ä"])
    func invalidStageNamesAreErrors(name: String) {
        #expect(
            failure("FROM alpine AS \(name)\n")
                == "Dockerfile:1: invalid name for build stage: \"\(name)\", name can't start with a number or contain symbols"
        )
    }

    @Test(arguments: ["a", "a1", "a-b_c.d", "ABC"])
    func validStageNames(name: String) throws {
        #expect(try plan("FROM alpine AS \(name)\n").stages[0].name == name.lowercased())
    }

    @Test func instructionsBeforeFromAreErrors() {
        #expect(
            failure("ARG A\nRUN true\nFROM alpine\n")
                == "Dockerfile:2: no build stage in current context (only ARG may come before the first FROM)"
        )
        #expect(failure("ARG A\n") == "Dockerfile:1: dockerfile contains no stages to build")
    }

    @Test func blankBaseIsAnError() {
        #expect(
            failure("ARG BASE\nFROM $BASE\n") == "Dockerfile:2: base name ($BASE) should not be blank")
    }

    @Test func expansionErrorsNameTheLine() {
        #expect(failure("ARG A=${B:?needed}\nFROM alpine\n") == "Dockerfile:1: B: needed")
        #expect(failure("FROM alpine\n\nCOPY --from=${X a b\n").hasPrefix("Dockerfile:3: "))
    }

    // MARK: Unused build args

    @Test func unusedBuildArgsAreReported() throws {
        let text = """
            ARG GLOBAL
            FROM alpine AS used
            ARG INSTAGE
            FROM alpine AS unreachable
            ARG ONLYUNREACHABLE
            FROM used
            """
        let result = try plan(
            text,
            buildArgs: [
                "GLOBAL": "1", "INSTAGE": "2", "ONLYUNREACHABLE": "3", "NOBODY": "4", "HTTP_PROXY": "p",
                "no_proxy": "q", "Ftp_Proxy": "r",
            ])
        #expect(result.unusedBuildArguments == ["NOBODY", "ONLYUNREACHABLE"])
        #expect(
            try plan(text, buildArgs: ["ONLYUNREACHABLE": "3"], target: "unreachable")
                .unusedBuildArguments.isEmpty)
    }

    /// BuildKit's proxyEnvFromBuildArgs and the executor's proxyEnvList (testBuiltinArgs).
    @Test func proxyBuildArgsAreMatchedInAnyCaseAndExportedInBoth() {
        #expect(
            Planner.proxyEnvironment(["http_proxy": "hp", "NO_PROXY": "np"]) == [
                "HTTP_PROXY=hp", "http_proxy=hp", "NO_PROXY=np", "no_proxy=np",
            ])
        // The last name in byte order wins; empty values and other names are not exported.
        #expect(
            Planner.proxyEnvironment(["HTTPS_PROXY": "upper", "https_proxy": "lower", "All_Proxy": ""]) == [
                "HTTPS_PROXY=lower", "https_proxy=lower",
            ])
        #expect(
            Planner.proxyEnvironment(["Ftp_Proxy": "f", "httpſ_proxy": "s", "HTTP_PROXYX": "x"]) == [
                "HTTPS_PROXY=s", "https_proxy=s", "FTP_PROXY=f", "ftp_proxy=f",
            ])
    }

    /// BuildKit's testTargetStageNameArg: TARGETSTAGE is the target, else the last stage's name, else
    /// `default`; predefined, so global (usable in FROM) and seen in a stage once declared.
    @Test func targetStageIsPredefined() throws {
        let text = "FROM alpine:$TARGETSTAGE AS base\nFROM scratch AS Foo\nFROM scratch\n"
        #expect(try plan(text).predefinedArguments["TARGETSTAGE"] == "default")
        #expect(try plan(text).stages[0].base == .image("alpine:default"))
        #expect(try plan(text, target: "foo").stages[0].base == .image("alpine:foo"))
        #expect(try plan(text + "FROM base AS Final\n").predefinedArguments["TARGETSTAGE"] == "final")
    }

    /// The `--from` check expands with the directive's escape: "a``b" is unchanged by the default lexer,
    /// while under "# escape=`" it becomes "a`b" and is refused (BuildKit's flag parsing always takes `\`).
    @Test func escapeDirectiveCarriesIntoThePlan() throws {
        #expect(try plan("FROM alpine\nCOPY --from=a``b x y\n").stages[0].sources[0] == .image("a``b"))
        let escaped = "# escape=`\nFROM alpine\nCOPY --from=a``b x y\n"
        #expect(failure(escaped).contains("variable expansion is not supported for --from"))
        #expect(try plan("# escape=`\nFROM alpine\n").escape == "`")
    }
}

@Suite struct PlannerDepthTests {
    /// A chain of 50,000 stages plans without recursion (no stack exhaustion), target last.
    @Test func longStageChainsPlanIteratively() throws {
        var text = "FROM scratch AS s0\n"
        for index in 1..<50_000 { text += "FROM s\(index - 1) AS s\(index)\n" }
        let dockerfile = try DockerfileParser.parse(Array(text.utf8), file: "Dockerfile")
        let plan = try Planner(dockerfile: dockerfile, buildArguments: [:], predefinedArguments: [:]).plan(target: nil)
        #expect(plan.buildOrder.count == 50_000)
        #expect(plan.buildOrder.first == 0 && plan.buildOrder.last == 49_999)
    }
}
