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

    /// Where the first `COPY --from` of the last stage reads: the observable result of expanding `--from`
    /// against the stage's scope.
    func copySource(_ text: String, buildArgs: [String: String] = [:]) throws -> StageSource? {
        let result = try plan(text, buildArgs: buildArgs)
        return result.stages.last?.sources.sorted { $0.key < $1.key }.first?.value
    }

    // MARK: ARG scoping

    @Test func globalArgIsSeenByFromOnly() throws {
        let text = "ARG BASE=alpine:3.19\nARG SRC=helper\nFROM $BASE\nCOPY --from=${SRC:-unset} a b\n"
        let result = try plan(text)
        #expect(result.stages[0].base == .image("alpine:3.19"))
        #expect(result.stages[0].sources[0] == .image("unset"))
        #expect(result.globalArguments.map(\.name) == ["BASE", "SRC"])
        #expect(result.globalArguments.map(\.value) == ["alpine:3.19", "helper"])
    }

    @Test func redeclaredGlobalArgTakesTheGlobalValue() throws {
        let text = "ARG SRC=helper\nFROM alpine\nARG SRC\nCOPY --from=$SRC a b\n"
        #expect(try copySource(text) == .image("helper"))
    }

    @Test func stageDefaultOverridesGlobalValue() throws {
        let text = "ARG SRC=helper\nFROM alpine\nARG SRC=local\nCOPY --from=$SRC a b\n"
        #expect(try copySource(text) == .image("local"))
    }

    @Test func buildArgOverridesDefaultsEverywhere() throws {
        let text = "ARG BASE=alpine\nFROM $BASE\nARG SRC=local\nCOPY --from=$SRC a b\n"
        let result = try plan(text, buildArgs: ["BASE": "debian", "SRC": "given"])
        #expect(result.stages[0].base == .image("debian"))
        #expect(result.stages[0].sources[1] == .image("given"))
        #expect(result.unusedBuildArguments.isEmpty)
    }

    /// BuildKit's dispatchArg sets an ARG's value in the build environment: it shadows an earlier ENV, and a
    /// later ENV wins again.
    @Test func argShadowsAnEarlierEnvAndALaterEnvWins() throws {
        let text = "FROM alpine\nENV SRC=fromenv\nARG SRC=fromarg\nCOPY --from=$SRC a b\n"
        #expect(try copySource(text, buildArgs: ["SRC": "frombuildarg"]) == .image("frombuildarg"))
        #expect(try copySource(text) == .image("fromarg"))
        let before = "FROM alpine\nARG SRC=fromarg\nENV SRC=fromenv\nCOPY --from=$SRC a b\n"
        #expect(try copySource(before) == .image("fromenv"))
    }

    @Test func argIsVisibleOnlyAfterItsDeclaration() throws {
        let text = "FROM alpine\nCOPY --from=${SRC:-early} a b\nARG SRC=late\n"
        #expect(try copySource(text) == .image("early"))
    }

    @Test func argsDoNotCarryIntoTheNextStage() throws {
        let text = "FROM alpine\nARG SRC=first\nFROM alpine\nCOPY --from=${SRC:-none} a b\n"
        #expect(try copySource(text) == .image("none"))
    }

    @Test func envCarriesIntoAStageBuiltOnIt() throws {
        let text = "FROM alpine AS base\nENV SRC=inherited\nFROM base\nCOPY --from=$SRC a b\n"
        #expect(try copySource(text) == .image("inherited"))
    }

    /// A stage built on another expands with that stage's ARGs (BuildKit's dispatchState.init): here a
    /// `${DIR:?…}` that fails unless DIR came along.
    @Test func argsCarryIntoAStageBuiltOnIt() throws {
        let text = "FROM alpine AS base\nARG DIR=/cache\nFROM base\nRUN --mount=type=cache,target=${DIR:?unset} true\n"
        #expect(failure(text) == "planned, order [0, 1]")
        #expect(
            failure("FROM alpine AS base\nFROM base\nRUN --mount=type=cache,target=${DIR:?unset} true\n")
                == "Dockerfile:3: DIR: unset")
    }

    @Test func globalDefaultsSeeEarlierGlobals() throws {
        let result = try plan("ARG A=x\nARG B=${A}y\nFROM img-$B\n")
        #expect(result.stages[0].base == .image("img-xy"))
    }

    @Test func predefinedPlatformArgsInFromAndDeclaredInStage() throws {
        let text = """
            FROM --platform=$BUILDPLATFORM golang AS build
            ARG TARGETARCH
            COPY --from=tools-$TARGETARCH a b
            FROM base-${TARGETOS}
            COPY --from=tools-${TARGETARCH:-undeclared} a b
            """
        let result = try plan(text)
        #expect(result.stages[0].platform == "linux/amd64")
        #expect(result.stages[0].sources[1] == .image("tools-arm64"))
        #expect(result.stages[1].base == .image("base-linux"))
        #expect(result.stages[1].sources[0] == .image("tools-undeclared"))
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

    @Test func stageIndexOutOfRange() {
        #expect(
            failure("FROM alpine\nCOPY --from=3 x y\n")
                == "Dockerfile:2: invalid stage index 3: the Dockerfile has 1 stage(s)")
    }

    @Test func unknownTarget() {
        #expect(
            failure("FROM alpine AS a\n", target: "nope")
                == "--target \"nope\": failed to reach build target nope in Dockerfile: no stage has that name"
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

    @Test func escapeDirectiveCarriesIntoThePlan() throws {
        let result = try plan("# escape=`\nFROM alpine\nCOPY --from=a`$b x y\n")
        #expect(result.escape == "`")
        #expect(result.stages[0].sources[0] == .image("a$b"))
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
