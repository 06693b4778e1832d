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
        var lastStageName: String?
        for instruction in dockerfile.instructions {
            if case .from(let from) = instruction.kind { lastStageName = from.stageName?.lowercased() }
        }
        predefinedArguments["TARGETSTAGE"] = target ?? lastStageName ?? "default"
        var globals: [(name: String, value: String?)] = []
        var stages: [PlannedStage] = []
        var usedArguments = Set<String>()

        func globalLookup(_ name: String) -> String? {
            if let entry = globals.last(where: { $0.name == name }) { return entry.value }
            return predefinedArguments[name]
        }

        // Split into the global ARG prelude and stages.
        var current: (from: Instruction, body: [Instruction])?
        var rawStages: [(from: Instruction, body: [Instruction])] = []
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
                        value = try expand(defaultValue, at: instruction, lookup: globalLookup)
                    }
                    globals.removeAll { $0.name == declaration.name }
                    globals.append((declaration.name, value))
                    usedArguments.insert(declaration.name)
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

        // Name and base each stage; FROM sees only global ARGs and the predefined platform ARGs.
        var indexByName: [String: Int] = [:]
        for (index, raw) in rawStages.enumerated() {
            guard case .from(let from) = raw.from.kind else { continue }
            let line = raw.from.range.start.line
            let reference = try expand(from.image, at: raw.from, lookup: globalLookup)
            guard !reference.isEmpty else {
                throw DockerfileError(file: file, line: line, message: "base name (\(from.image)) should not be blank")
            }
            let platform = try from.platform.map { try expand($0, at: raw.from, lookup: globalLookup) }
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

        // BuildKit refuses variables in `--from` for every stage, needed or not, before it plans any (COPY
        // in toCommand, RUN --mount when the instruction is parsed).
        for stage in stages {
            for instruction in stage.instructions { try Self.checkFromValues(instruction, lexer: lexer, file: file) }
        }

        // Resolve `--from` references as written. A stage's own errors (a bad ARG default, an invalid `--from`
        // index) only matter if the target needs it: BuildKit dispatches only the stages the target reaches.
        var finalScopes: [Int: StageScope] = [:]
        var stageErrors: [Int: any Error] = [:]
        // BuildKit dispatches stages in file order, so a COPY from a later stage fails when its stage is
        // dispatched; kept apart from stageErrors so that a cycle through it is still reported as one.
        var laterStageErrors: [Int: DockerfileError] = [:]
        var argumentsByStage: [Int: Set<String>] = [:]
        for index in stages.indices {
            // A stage built on another starts with its ENV and ARGs, as the executor's does.
            var scope: StageScope
            if case .stage(let parent) = stages[index].base, let parentScope = finalScopes[parent] {
                scope = StageScope(inheriting: parentScope)
            } else {
                scope = StageScope()
            }
            var dependencies = Set<Int>()
            if case .stage(let parent) = stages[index].base { dependencies.insert(parent) }
            do {
                if case .stage(let parent) = stages[index].base {
                    for trigger in stages[parent].instructions {
                        guard case .onbuild(let text) = trigger.kind,
                            let parsed = try? DockerfileParser.parse(Array(text.utf8), file: file),
                            parsed.instructions.count == 1, case .copy(let copy) = parsed.instructions[0].kind,
                            let from = copy.from
                        else { continue }
                        let source = try resolveSource(
                            from, at: trigger, stageIndex: index, indexByName: indexByName, stageCount: stages.count)
                        if case .stage(let other) = source {
                            dependencies.insert(other)
                            stages[index].triggerSources[from] = source
                        }
                    }
                }
                for (position, instruction) in stages[index].instructions.enumerated() {
                    switch instruction.kind {
                    case .arg(let declarations):
                        for declaration in declarations {
                            argumentsByStage[index, default: []].insert(declaration.name)
                            if let given = buildArguments[declaration.name] {
                                scope.declareArgument(declaration.name, value: given)
                            } else if let defaultValue = declaration.defaultValue {
                                scope.declareArgument(
                                    declaration.name,
                                    value: try expand(defaultValue, at: instruction, lookup: scope.lookup))
                            } else {
                                scope.declareArgument(declaration.name, value: globalLookup(declaration.name))
                            }
                        }
                    case .env(let pairs):
                        for pair in pairs {
                            let key = try expand(pair.key, at: instruction, lookup: scope.lookup)
                            scope.setEnvironment(key, try expand(pair.value, at: instruction, lookup: scope.lookup))
                        }
                    case .copy(let copy):
                        try checkSources(copy, at: instruction, lookup: scope.lookup)
                        if let fromText = copy.from {
                            let source = try resolveSource(
                                fromText, at: instruction, stageIndex: index, indexByName: indexByName,
                                stageCount: stages.count)
                            stages[index].sources[position] = source
                            if case .stage(let other) = source {
                                dependencies.insert(other)
                                // BuildKit dispatches stages in file order.
                                if other > index, laterStageErrors[index] == nil {
                                    laterStageErrors[index] = fail(
                                        instruction,
                                        "cannot copy from stage \"\(fromText)\", it needs to be defined before current stage \"\(stages[index].displayName)\""
                                    )
                                }
                            }
                        }
                    case .run(let run):
                        for (mountIndex, text) in run.mounts.enumerated() {
                            let expandedText = try expand(text, at: instruction, lookup: scope.lookup)
                            guard let mount = try? RunMount.parse(expandedText) else { continue }
                            var from: String?
                            var target = ""
                            switch mount {
                            case .bind(let mountTarget, _, let value, _):
                                from = value
                                target = mountTarget
                            case .cache(let mountTarget, _, _, let value, _, _, _, _):
                                from = value
                                target = mountTarget
                            default: break
                            }
                            guard let from else { continue }
                            let source = try resolveSource(
                                from, at: instruction, stageIndex: index,
                                indexByName: indexByName, stageCount: stages.count)
                            stages[index].mountSources["\(position):\(mountIndex)"] = source
                            if case .stage(let other) = source {
                                dependencies.insert(other)
                                // BuildKit's dispatchRunMounts: a mounted stage must be dispatched already.
                                if other > index, laterStageErrors[index] == nil {
                                    laterStageErrors[index] = fail(
                                        instruction,
                                        "cannot mount from stage \"\(from)\" to \"\(target)\", stage needs to be defined before current command"
                                    )
                                }
                            }
                        }
                    default:
                        break
                    }
                }
            } catch {
                stageErrors[index] = error
            }
            finalScopes[index] = scope
            stages[index].dependencies = dependencies.sorted()
        }

        // The target and what it needs, each stage after its dependencies; cycles are errors.
        let targetIndex: Int
        if let target {
            guard let found = indexByName[target.lowercased()] else {
                throw ArgumentError(
                    argument: "--target", value: target,
                    reason: "target stage \"\(target)\" could not be found in \(file)")
            }
            targetIndex = found
        } else {
            targetIndex = stages.count - 1
        }
        var order: [Int] = []
        var state = [Int: Bool]()  // false: in progress, true: done
        // Depth-first without recursion (a hostile Dockerfile can chain thousands of stages): each frame is a
        // stage and how many of its dependencies have been entered.
        var stack: [(index: Int, next: Int)] = []
        func enter(_ index: Int) throws {
            if state[index] == false {
                throw DockerfileError(
                    file: file, line: stages[index].from.range.start.line,
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
        // The first needed stage, in file order, that copies from a later one.
        if let first = order.sorted().first(where: { laterStageErrors[$0] != nil }), let error = laterStageErrors[first]
        {
            throw error
        }
        for index in order { usedArguments.formUnion(argumentsByStage[index] ?? []) }

        let unused = buildArguments.keys.filter {
            !usedArguments.contains($0) && Self.proxyName(of: $0) == nil
        }.sorted()
        return BuildPlan(
            file: file, escape: dockerfile.directives.escape, stages: stages, globalArguments: globals,
            predefinedArguments: predefinedArguments,
            target: targetIndex, buildOrder: order, unusedBuildArguments: unused)
    }

    private func fail(_ instruction: Instruction, _ message: String) -> DockerfileError {
        DockerfileError(file: dockerfile.file, line: instruction.range.start.line, message: message)
    }

    private func resolveSource(
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
    private func checkSources(_ copy: CopyInstruction, at instruction: Instruction, lookup: (String) -> String?)
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

    private func expand(_ word: String, at instruction: Instruction, lookup: (String) -> String?) throws -> String {
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
