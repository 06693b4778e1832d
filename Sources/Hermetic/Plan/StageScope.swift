/// The variables of a stage, kept as BuildKit's dispatchState keeps them: the config's Env (from the base and
/// ENV instructions), the ARGs declared, and the build environment (the LLB state's env) that expansion and
/// RUN read. ENV and every ARG with a value write to the build environment, so the last of them to set a name
/// wins; only ENV reaches the config.
public struct StageScope: Sendable {
    /// One variable of the build environment; `fromArgument` when an ARG set its current value.
    public struct Variable: Sendable, Equatable {
        public var name: String
        public var value: String
        public var fromArgument: Bool
    }

    /// ENV in order of first definition; a redefinition keeps its place (as Docker's config Env does).
    public private(set) var environment: [(name: String, value: String)] = []
    /// Names of the ARGs declared (in this stage and the stages it is built on), in order of their last
    /// declaration.
    public private(set) var argumentNames: [String] = []
    /// What expansion and RUN see: each name with the value last set, in order of last setting (the order of
    /// BuildKit's EnvList, which a RUN step's environment follows).
    public private(set) var variables: [Variable] = []

    public init(environment: [(name: String, value: String)] = []) {
        for entry in environment { setEnvironment(entry.name, entry.value) }
    }

    /// Parses `Env` lines of a base image config (a line without `=` is a name with an empty value).
    public init(environmentLines: [String]) {
        for line in environmentLines {
            if let eq = line.firstIndex(of: "=") {
                setEnvironment(String(line[..<eq]), String(line[line.index(after: eq)...]))
            } else {
                setEnvironment(line, "")
            }
        }
    }

    /// The scope of a stage built on `base`: its ARGs and build environment carry over (BuildKit's
    /// dispatchState.init), then the config's Env is set again over them, as BuildKit's dispatchStages sets
    /// the image's Env on the state it inherited (so an ENV the base stage's ARG shadowed is seen again).
    public init(inheriting base: StageScope) {
        self = base
        for entry in base.environment { setVariable(entry.name, entry.value, fromArgument: false) }
    }

    public func lookup(_ name: String) -> String? {
        variables.last(where: { $0.name == name })?.value
    }

    /// ENV: the config's Env and the build environment.
    public mutating func setEnvironment(_ name: String, _ value: String) {
        if let index = environment.firstIndex(where: { $0.name == name }) {
            environment[index].value = value
        } else {
            environment.append((name, value))
        }
        setVariable(name, value, fromArgument: false)
    }

    /// ARG: a value (a default, a build arg or the global value) goes to the build environment only, where it
    /// shadows an ENV of that name until the next ENV sets it (BuildKit's dispatchArg AddEnv). Without a
    /// value nothing changes there (BuildKit adds nothing), so an earlier value of the name stays.
    public mutating func declareArgument(_ name: String, value: String?) {
        argumentNames.removeAll { $0 == name }
        argumentNames.append(name)
        if let value { setVariable(name, value, fromArgument: true) }
    }

    private mutating func setVariable(_ name: String, _ value: String, fromArgument: Bool) {
        variables.removeAll { $0.name == name }
        variables.append(Variable(name: name, value: value, fromArgument: fromArgument))
    }

    /// `KEY=VALUE` lines as the image config's `Env` holds them.
    public var environmentLines: [String] { environment.map { "\($0.name)=\($0.value)" } }

    /// `KEY=VALUE` lines of the build environment, for a RUN step.
    public var variableLines: [String] { variables.map { "\($0.name)=\($0.value)" } }

    /// The ARGs whose value is in the build environment (no later ENV replaced it), in declaration order.
    public var argumentsInEffect: [String] {
        let set = Set(variables.filter(\.fromArgument).map(\.name))
        return argumentNames.filter { set.contains($0) }
    }
}
