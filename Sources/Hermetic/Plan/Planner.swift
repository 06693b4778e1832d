// Plan/ — a `Dockerfile`, build args and the target platform in; a `BuildPlan` out: the stages the target
// needs in build order, their bases and `--from` sources, ARG scopes, the instruction rules and platform
// checks that can fail before anything runs.

/// Where a stage starts from, or where a `COPY --from` / `RUN --mount from=` reads.
public enum StageSource: Sendable, Hashable {
    case scratch
    /// Another stage of this Dockerfile, by index.
    case stage(Int)
    /// An image reference (after expansion), resolved through named contexts and pins.
    case image(String)
    /// A named context that is a plain directory (`COPY --from=NAME` only).
    case namedDirectory(String)
}

public struct PlannedStage: Sendable {
    public var index: Int
    /// Lowercased, as BuildKit compares stage names.
    public var name: String?
    public var base: StageSource
    /// The expanded `FROM --platform` value, if any.
    public var platform: String?
    public var from: Instruction
    /// The instructions after FROM.
    public var instructions: [Instruction]
    /// For each instruction (by position in `instructions`) that reads another source: where it reads.
    public var sources: [Int: StageSource]
    /// For RUN instructions: `RUN --mount=…,from=X` sources, keyed by "position:mountIndex".
    public var mountSources: [String: StageSource] = [:]
    /// The stages that ONBUILD `COPY --from=X` triggers of a base stage name, keyed by X as written: they run
    /// in this stage, and X is a stage of this Dockerfile (BuildKit's initOnBuildTriggers).
    public var triggerSources: [String: StageSource] = [:]
    /// Stages this one needs built first (its base and its `--from` stages), ascending.
    public var dependencies: [Int]

    /// How errors and logs name the stage: `stage-N` or its name.
    public var displayName: String { name ?? "stage-\(index)" }
}

/// The stage graph of a Dockerfile for one target platform: every stage, and the stages the target needs,
/// in an order where each comes after all it depends on.
public struct BuildPlan: Sendable {
    public var file: String
    /// The Dockerfile's escape character (`# escape=`), for every later expansion.
    public var escape: Character
    public var stages: [PlannedStage]
    /// Global ARGs (before the first FROM) with their values after build-arg overrides, in order.
    public var globalArguments: [(name: String, value: String?)]
    /// Predefined ARGs: the platform ones (TARGETPLATFORM, BUILDARCH, …) for this plan's platform, and
    /// TARGETSTAGE.
    public var predefinedArguments: [String: String]
    public var target: Int
    public var buildOrder: [Int]
    /// Build args given on the command line that no ARG of a needed stage (or the globals) declares.
    public var unusedBuildArguments: [String]
}

/// Turns a parsed Dockerfile into a `BuildPlan`: names stages, resolves FROM and `--from` references,
/// finds the stages the target needs and orders them; finds cycles. It reads no files.
public struct Planner {
    public var dockerfile: Dockerfile
    public var buildArguments: [String: String]
    public var predefinedArguments: [String: String]
    private let lexer: ShellLexer

    /// Build args that RUN sees without an ARG (BuildKit's predefined proxy args), in the order BuildKit
    /// exports them.
    static let proxyNames = ["http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy"]

    /// Whether a build arg is a proxy arg: its name is one of `proxyNames` in any case (Go's EqualFold,
    /// under which `ſ` is an `s`).
    static func proxyName(of argument: String) -> String? {
        let folded = String(argument.unicodeScalars.map { $0 == "\u{17F}" ? "s" : Character($0) }).lowercased()
        return proxyNames.contains(folded) ? folded : nil
    }

    /// The proxy variables of a RUN step, as BuildKit sets them: for each proxy name, the value of the last
    /// build arg (in byte order of names) that is that name in any case, exported in upper and lower case
    /// (`HTTP_PROXY=v`, `http_proxy=v`); empty values are not exported.
    public static func proxyEnvironment(_ buildArguments: [String: String]) -> [String] {
        var values: [String: String] = [:]
        for name in buildArguments.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            if let proxy = proxyName(of: name) { values[proxy] = buildArguments[name] }
        }
        return proxyNames.flatMap { proxy -> [String] in
            guard let value = values[proxy], !value.isEmpty else { return [] }
            return ["\(proxy.uppercased())=\(value)", "\(proxy)=\(value)"]
        }
    }

    public init(dockerfile: Dockerfile, buildArguments: [String: String], predefinedArguments: [String: String]) {
        self.dockerfile = dockerfile
        self.buildArguments = buildArguments
        self.predefinedArguments = predefinedArguments
        self.lexer = ShellLexer(escape: dockerfile.directives.escape)
    }

    public func plan(target: String?) throws -> BuildPlan {
        let file = dockerfile.file
        // BuildKit's TARGETSTAGE: the target as given, else the last stage's name, else `default`.
        var predefinedArguments = self.predefinedArguments
        predefinedArguments["TARGETSTAGE"] = target ?? lastStageName ?? "default"
        let (globals, rawStages) = try splitIntoStages(predefinedArguments: predefinedArguments)
        var (stages, indexByName) = try nameStages(rawStages, globals: globals)

        // BuildKit refuses variables in `--from` for every stage, needed or not, before it plans any (COPY
        // in toCommand, RUN --mount when the instruction is parsed).
        for stage in stages {
            for instruction in stage.instructions { try Self.checkFromValues(instruction, lexer: lexer, file: file) }
        }

        let references = resolveReferences(of: &stages, indexByName: indexByName, globals: globals)
        let targetIndex = try targetStageIndex(of: target, indexByName: indexByName, stageCount: stages.count)
        let order = try buildOrder(from: targetIndex, stages: stages, stageErrors: references.stageErrors)
        // The first needed stage, in file order, that copies from a later one.
        if let first = order.sorted().first(where: { references.laterStageErrors[$0] != nil }),
            let error = references.laterStageErrors[first]
        {
            throw error
        }

        var usedArguments = Set(globals.arguments.map(\.name))
        for index in order { usedArguments.formUnion(references.argumentsByStage[index] ?? []) }
        let unused = buildArguments.keys.filter {
            !usedArguments.contains($0) && Self.proxyName(of: $0) == nil
        }.sorted()
        return BuildPlan(
            file: file, escape: dockerfile.directives.escape, stages: stages, globalArguments: globals.arguments,
            predefinedArguments: predefinedArguments,
            target: targetIndex, buildOrder: order, unusedBuildArguments: unused)
    }

    /// The name of the Dockerfile's last stage, lowercased, if it has one.
    private var lastStageName: String? {
        var name: String?
        for instruction in dockerfile.instructions {
            if case .from(let from) = instruction.kind { name = from.stageName?.lowercased() }
        }
        return name
    }

    /// A stage as written: its FROM and the instructions after it.
    private typealias RawStage = (from: Instruction, body: [Instruction])

    /// Splits the Dockerfile into the global ARG prelude (values after build-arg overrides) and the stages.
    private func splitIntoStages(predefinedArguments: [String: String]) throws -> (GlobalArgumentScope, [RawStage]) {
        let file = dockerfile.file
        var globals = GlobalArgumentScope(predefined: predefinedArguments)
        var current: RawStage?
        var rawStages: [RawStage] = []
        for instruction in dockerfile.instructions {
            switch instruction.kind {
            case .from:
                if let current { rawStages.append(current) }
                current = (instruction, [])
            case .arg(let declarations) where current == nil:
                for declaration in declarations {
                    // A global ARG without a default keeps a predefined value (`ARG TARGETARCH`).
                    var value: String? = predefinedArguments[declaration.name]
                    if let given = buildArguments[declaration.name] {
                        value = given
                    } else if let defaultValue = declaration.defaultValue {
                        value = try expand(defaultValue, at: instruction, lookup: globals.lookup)
                    }
                    globals.arguments.removeAll { $0.name == declaration.name }
                    globals.arguments.append((declaration.name, value))
                }
            default:
                guard current != nil else {
                    throw DockerfileError(
                        file: file, line: instruction.range.start.line,
                        message: "no build stage in current context (only ARG may come before the first FROM)")
                }
                current?.body.append(instruction)
            }
        }
        if let current { rawStages.append(current) }
        guard !rawStages.isEmpty else {
            throw DockerfileError(
                file: file, line: max(1, dockerfile.instructions.last?.range.start.line ?? 1),
                message: "dockerfile contains no stages to build")
        }
        return (globals, rawStages)
    }

    /// Names and bases each stage; FROM sees only global ARGs and the predefined platform ARGs.
    private func nameStages(_ rawStages: [RawStage], globals: GlobalArgumentScope) throws
        -> (stages: [PlannedStage], indexByName: [String: Int])
    {
        let file = dockerfile.file
        var stages: [PlannedStage] = []
        var indexByName: [String: Int] = [:]
        for (index, raw) in rawStages.enumerated() {
            guard case .from(let from) = raw.from.kind else { continue }
            let line = raw.from.range.start.line
            let reference = try expand(from.image, at: raw.from, lookup: globals.lookup)
            guard !reference.isEmpty else {
                throw DockerfileError(file: file, line: line, message: "base name (\(from.image)) should not be blank")
            }
            let platform = try from.platform.map { try expand($0, at: raw.from, lookup: globals.lookup) }
            var name: String?
            if let stageName = from.stageName {
                let lowered = stageName.lowercased()
                guard Self.isValidStageName(lowered) else {
                    throw DockerfileError(
                        file: file, line: line,
                        message:
                            "invalid name for build stage: \"\(stageName)\", name can't start with a number or contain symbols"
                    )
                }
                guard indexByName[lowered] == nil else {
                    throw DockerfileError(file: file, line: line, message: "duplicate stage name \"\(stageName)\"")
                }
                name = lowered
            }
            let base: StageSource
            if reference.lowercased() == "scratch" {
                base = .scratch
            } else if let earlier = indexByName[reference.lowercased()] {
                base = .stage(earlier)
            } else {
                base = .image(reference)
            }
            if let name { indexByName[name] = index }
            stages.append(
                PlannedStage(
                    index: index, name: name, base: base, platform: platform, from: raw.from,
                    instructions: raw.body, sources: [:], mountSources: [:], dependencies: []))
        }
        return (stages, indexByName)
    }

    /// The index of the stage `--target` names, else the last stage's.
    private func targetStageIndex(of target: String?, indexByName: [String: Int], stageCount: Int) throws -> Int {
        guard let target else { return stageCount - 1 }
        guard let found = indexByName[target.lowercased()] else {
            throw ArgumentError(
                argument: "--target", value: target,
                reason: "target stage \"\(target)\" could not be found in \(dockerfile.file)")
        }
        return found
    }

    /// The target and what it needs, each stage after its dependencies; a cycle, or a needed stage's own
    /// error, is thrown.
    private func buildOrder(from targetIndex: Int, stages: [PlannedStage], stageErrors: [Int: any Error]) throws
        -> [Int]
    {
        var order: [Int] = []
        var state = [Int: Bool]()  // false: in progress, true: done
        // Depth-first without recursion (a hostile Dockerfile can chain thousands of stages): each frame is a
        // stage and how many of its dependencies have been entered.
        var stack: [(index: Int, next: Int)] = []
        func enter(_ index: Int) throws {
            if state[index] == false {
                throw DockerfileError(
                    file: dockerfile.file, line: stages[index].from.range.start.line,
                    message: "circular dependency detected on stage: \(stages[index].displayName)")
            }
            if let error = stageErrors[index] { throw error }
            state[index] = false
            stack.append((index, 0))
        }
        try enter(targetIndex)
        while let top = stack.last {
            let dependencies = stages[top.index].dependencies
            guard top.next < dependencies.count else {
                stack.removeLast()
                state[top.index] = true
                order.append(top.index)
                continue
            }
            stack[stack.count - 1].next += 1
            let dependency = dependencies[top.next]
            if state[dependency] != true { try enter(dependency) }
        }
        return order
    }

    func fail(_ instruction: Instruction, _ message: String) -> DockerfileError {
        DockerfileError(file: dockerfile.file, line: instruction.range.start.line, message: message)
    }

    func resolveSource(
        _ text: String, at instruction: Instruction, stageIndex: Int,
        indexByName: [String: Int], stageCount: Int
    ) throws -> StageSource {
        if let byName = indexByName[text.lowercased()] {
            guard byName != stageIndex else {
                throw DockerfileError(
                    file: dockerfile.file, line: instruction.range.start.line,
                    message: "circular dependency detected on stage: \(text)")
            }
            return .stage(byName)
        }
        // BuildKit reads the value with strconv.Atoi: a negative number is an index too, and never valid.
        if text.count > 1, text.first == "-", text.dropFirst().allSatisfy({ $0.isASCII && $0.isNumber }) {
            throw DockerfileError(
                file: dockerfile.file, line: instruction.range.start.line, message: "invalid stage index \(text)")
        }
        if !text.isEmpty, text.allSatisfy(\.isASCII), text.allSatisfy(\.isNumber) {
            guard let number = Int(text), number < stageCount else {
                throw DockerfileError(
                    file: dockerfile.file, line: instruction.range.start.line,
                    message: "invalid stage index \(text): the Dockerfile has \(stageCount) stage(s)")
            }
            guard number != stageIndex else {
                throw DockerfileError(
                    file: dockerfile.file, line: instruction.range.start.line,
                    message: "circular dependency detected on stage: \(number)")
            }
            return .stage(number)
        }
        if text.lowercased() == "scratch" { return .scratch }
        return .image(text)
    }

    static let copyFromVariableMessage =
        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"

    /// BuildKit's rules for `--from` values that use variables: COPY's value must be unchanged
    /// by expanding it with no variables set (toCommand), a RUN mount's `from=` must hold no `$` before its
    /// last character (instructions' parseMount). Instructions of ONBUILD triggers are checked too.
    static func checkFromValues(_ instruction: Instruction, lexer: ShellLexer, file: String) throws {
        let line = instruction.range.start.line
        switch instruction.kind {
        case .copy(let copy):
            guard let from = copy.from else { return }
            let expanded: String
            do {
                expanded = try lexer.processWord(from, lookup: { _ in nil })
            } catch {
                throw DockerfileError(file: file, line: line, message: "\(error)")
            }
            guard expanded == from else {
                throw DockerfileError(file: file, line: line, message: copyFromVariableMessage)
            }
        case .run(let run):
            for mount in run.mounts where RunMount.rawFromUsesVariable(mount) {
                throw DockerfileError(
                    file: file, line: line,
                    message: "'from' doesn't support variable expansion, define alias stage instead")
            }
        default:
            return
        }
    }

    /// BuildKit's dispatchCopy rules on the sources as expanded and unquoted (a quoted URL is a URL). Thrown
    /// into the stage's errors, so only a stage the target needs fails. A source this scope cannot expand
    /// (a variable of the base image's ENV) is left to the executor, which checks again.
    func checkSources(_ copy: CopyInstruction, at instruction: Instruction, lookup: (String) -> String?)
        throws
    {
        var expanded = copy
        let heredocNames = Set(copy.heredocs.map(\.name))
        for (index, source) in copy.sources.enumerated() where !heredocNames.contains(source) {
            guard let word = try? lexer.processWord(source, lookup: lookup) else { return }
            expanded.sources[index] = word
        }
        if let checksum = copy.checksum {
            guard let word = try? lexer.processWord(checksum, lookup: lookup) else { return }
            expanded.checksum = word
        }
        if let violation = expanded.sourceRuleViolation() { throw fail(instruction, violation) }
    }

    func expand(_ word: String, at instruction: Instruction, lookup: (String) -> String?) throws -> String {
        do {
            return try lexer.processWord(word, lookup: lookup)
        } catch let error as DockerfileError {
            throw error
        } catch {
            throw DockerfileError(file: dockerfile.file, line: instruction.range.start.line, message: "\(error)")
        }
    }

    /// BuildKit's rule: lowercase letter first, then letters, digits, `-`, `_`, `.`.
    static func isValidStageName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, ("a"..."z").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" || $0 == "."
        }
    }
}

/// The global ARGs (before the first FROM) over the predefined ARGs: what FROM lines see, and what a stage's
/// ARG without a default takes.
struct GlobalArgumentScope {
    var arguments: [(name: String, value: String?)] = []
    let predefined: [String: String]

    func lookup(_ name: String) -> String? {
        if let entry = arguments.last(where: { $0.name == name }) { return entry.value }
        return predefined[name]
    }
}
