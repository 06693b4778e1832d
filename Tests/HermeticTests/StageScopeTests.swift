import Testing

@testable import Hermetic

/// A stage's variables as BuildKit's dispatchState keeps them: the config's Env, and the build environment
/// that ENV and ARGs with a value both write, the last to set a name winning.
@Suite struct StageScopeTests {
    @Test func argShadowsAnEnvUntilTheNextEnv() {
        var scope = StageScope(environmentLines: ["PATH=/bin", "NAME=image"])
        scope.declareArgument("NAME", value: "arg")
        #expect(scope.lookup("NAME") == "arg")
        #expect(scope.environmentLines == ["PATH=/bin", "NAME=image"])
        scope.setEnvironment("NAME", "env")
        #expect(scope.lookup("NAME") == "env")
        scope.declareArgument("NAME", value: "arg again")
        #expect(scope.lookup("NAME") == "arg again")
        // Only ENV reaches the config, in the place its name first took.
        #expect(scope.environmentLines == ["PATH=/bin", "NAME=env"])
    }

    /// BuildKit's EnvList lists each name once, in the order names were last set.
    @Test func buildEnvironmentIsInOrderOfLastSetting() {
        var scope = StageScope(environmentLines: ["A=1", "B=2"])
        scope.declareArgument("C", value: "3")
        scope.setEnvironment("A", "4")
        #expect(scope.variableLines == ["B=2", "C=3", "A=4"])
        #expect(scope.environmentLines == ["A=4", "B=2"])
    }

    @Test func argumentsInEffectAreThoseNoLaterEnvReplaced() {
        var scope = StageScope()
        scope.declareArgument("KEPT", value: "1")
        scope.declareArgument("HIDDEN", value: "2")
        scope.declareArgument("EMPTY", value: nil)
        scope.setEnvironment("HIDDEN", "env")
        #expect(scope.argumentsInEffect == ["KEPT"])
    }

    /// A stage built on another starts from its build environment and ARGs, then the config's Env is set
    /// over them again (BuildKit's dispatchStages), so an ENV the base stage's ARG shadowed is seen again.
    @Test func inheritingSetsTheConfigEnvAgain() {
        var base = StageScope(environmentLines: ["PATH=/bin"])
        base.setEnvironment("NAME", "env")
        base.declareArgument("NAME", value: "arg")
        base.declareArgument("ONLY_ARG", value: "a")
        #expect(base.lookup("NAME") == "arg")
        let child = StageScope(inheriting: base)
        #expect(child.lookup("NAME") == "env")
        #expect(child.lookup("ONLY_ARG") == "a")
        #expect(child.argumentNames == ["NAME", "ONLY_ARG"])
        #expect(child.environmentLines == ["PATH=/bin", "NAME=env"])
    }

    /// BuildKit's dispatchArg adds nothing for an ARG without a value: the name keeps the value it had.
    @Test func argWithoutAValueKeepsTheEarlierValue() {
        var scope = StageScope()
        scope.declareArgument("X", value: "1")
        scope.declareArgument("X", value: nil)
        #expect(scope.lookup("X") == "1")
        #expect(scope.argumentsInEffect == ["X"])
        scope.declareArgument("NEVER", value: nil)
        #expect(scope.lookup("NEVER") == nil)
    }
}
