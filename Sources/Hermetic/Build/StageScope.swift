/// The variables a stage's instructions expand against: ENV (from the base and ENV instructions)
/// and the ARGs declared so far. ENV always wins over an ARG of the same name (Dockerfile reference).
public struct StageScope: Sendable {
    /// ENV in order of first definition; a redefinition keeps its place (as Docker's config Env does).
    public private(set) var environment: [(name: String, value: String)] = []
    /// ARGs declared in this stage, in declaration order, with their value (nil: declared, no value).
    public private(set) var arguments: [(name: String, value: String?)] = []

    public init(environment: [(name: String, value: String)] = []) {
        self.environment = environment
    }

    public func lookup(_ name: String) -> String? {
        if let entry = environment.first(where: { $0.name == name }) { return entry.value }
        if let entry = arguments.last(where: { $0.name == name }) { return entry.value }
        return nil
    }

    public mutating func setEnvironment(_ name: String, _ value: String) {
        if let index = environment.firstIndex(where: { $0.name == name }) {
            environment[index].value = value
        } else {
            environment.append((name, value))
        }
    }

    public mutating func declareArgument(_ name: String, value: String?) {
        arguments.removeAll { $0.name == name }
        arguments.append((name, value))
    }

    /// `KEY=VALUE` lines as the image config's `Env` holds them.
    public var environmentLines: [String] { environment.map { "\($0.name)=\($0.value)" } }

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
}
