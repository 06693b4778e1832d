// The stage walk of planning: each stage's ARG and ENV scope, its `--from` sources (COPY, RUN mounts, ONBUILD
// triggers of its base) and the stages it depends on, with the errors that count only if the target needs it.

extension Planner {
    /// Resolves `--from` references as written, fills each stage's sources and dependencies, and collects the
    /// ARGs each declares. A stage's own errors (a bad ARG default, an invalid `--from` index) only matter if
    /// the target needs it: BuildKit dispatches only the stages the target reaches, so they are kept, not thrown.
    func resolveReferences(
        of stages: inout [PlannedStage], indexByName: [String: Int], globals: GlobalArgumentScope
    ) -> StageReferences {
        var references = StageReferences()
        var finalScopes: [Int: StageScope] = [:]
        for index in stages.indices {
            // A stage built on another starts with its ENV and ARGs, as the executor's does.
            var scope = StageScope()
            var dependencies = Set<Int>()
            var parent: Int?
            if case .stage(let base) = stages[index].base {
                parent = base
                dependencies.insert(base)
                if let parentScope = finalScopes[base] { scope = StageScope(inheriting: parentScope) }
            }
            var walk = StageWalk(
                stage: stages[index], scope: scope, dependencies: dependencies, indexByName: indexByName,
                stageCount: stages.count, globals: globals)
            do {
                if let parent { try walkTriggers(stages[parent].instructions, into: &walk) }
                for (position, instruction) in walk.stage.instructions.enumerated() {
                    try walkInstruction(instruction, at: position, into: &walk)
                }
            } catch {
                references.stageErrors[index] = error
            }
            references.laterStageErrors[index] = walk.laterStageError
            references.argumentsByStage[index] = walk.declaredArguments
            finalScopes[index] = walk.scope
            stages[index] = walk.stage
            stages[index].dependencies = walk.dependencies.sorted()
        }
        return references
    }

    /// A base stage's ONBUILD `COPY --from=X` triggers run in this stage: X is a dependency of this one.
    private func walkTriggers(_ parentInstructions: [Instruction], into walk: inout StageWalk) throws {
        for trigger in parentInstructions {
            guard case .onbuild(let text) = trigger.kind,
                let parsed = try? DockerfileParser.parse(Array(text.utf8), file: dockerfile.file),
                parsed.instructions.count == 1, case .copy(let copy) = parsed.instructions[0].kind,
                let from = copy.from
            else { continue }
            let source = try resolveSource(from, at: trigger, in: walk)
            if case .stage(let other) = source {
                walk.dependencies.insert(other)
                walk.stage.triggerSources[from] = source
            }
        }
    }

    /// One instruction's part in the stage's scope (ARG, ENV) and in what it reads (COPY --from, RUN --mount).
    private func walkInstruction(_ instruction: Instruction, at position: Int, into walk: inout StageWalk) throws {
        switch instruction.kind {
        case .arg(let declarations):
            for declaration in declarations {
                walk.declaredArguments.insert(declaration.name)
                if let given = buildArguments[declaration.name] {
                    walk.scope.declareArgument(declaration.name, value: given)
                } else if let defaultValue = declaration.defaultValue {
                    let value = try expand(defaultValue, at: instruction, lookup: walk.scope.lookup)
                    walk.scope.declareArgument(declaration.name, value: value)
                } else {
                    walk.scope.declareArgument(declaration.name, value: walk.globals.lookup(declaration.name))
                }
            }
        case .env(let pairs):
            for pair in pairs {
                let key = try expand(pair.key, at: instruction, lookup: walk.scope.lookup)
                walk.scope.setEnvironment(key, try expand(pair.value, at: instruction, lookup: walk.scope.lookup))
            }
        case .copy(let copy):
            try checkSources(copy, at: instruction, lookup: walk.scope.lookup)
            guard let fromText = copy.from else { return }
            let source = try resolveSource(fromText, at: instruction, in: walk)
            walk.stage.sources[position] = source
            guard case .stage(let other) = source else { return }
            walk.dependencies.insert(other)
            // BuildKit dispatches stages in file order.
            if other > walk.stage.index, walk.laterStageError == nil {
                walk.laterStageError = fail(
                    instruction,
                    "cannot copy from stage \"\(fromText)\", it needs to be defined before current stage \"\(walk.stage.displayName)\""
                )
            }
        case .run(let run):
            try walkRunMounts(run, of: instruction, at: position, into: &walk)
        default:
            break
        }
    }

    /// The `from=` of a RUN's bind and cache mounts, expanded in the stage's scope.
    private func walkRunMounts(
        _ run: RunInstruction, of instruction: Instruction, at position: Int, into walk: inout StageWalk
    ) throws {
        for (mountIndex, text) in run.mounts.enumerated() {
            let expandedText = try expand(text, at: instruction, lookup: walk.scope.lookup)
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
            let source = try resolveSource(from, at: instruction, in: walk)
            walk.stage.mountSources["\(position):\(mountIndex)"] = source
            guard case .stage(let other) = source else { continue }
            walk.dependencies.insert(other)
            // BuildKit's dispatchRunMounts: a mounted stage must be dispatched already.
            if other > walk.stage.index, walk.laterStageError == nil {
                walk.laterStageError = fail(
                    instruction,
                    "cannot mount from stage \"\(from)\" to \"\(target)\", stage needs to be defined before current command"
                )
            }
        }
    }

    /// A `--from` reference of the stage being walked, resolved against the stage names and indexes.
    private func resolveSource(_ text: String, at instruction: Instruction, in walk: StageWalk) throws -> StageSource {
        try resolveSource(
            text, at: instruction, stageIndex: walk.stage.index, indexByName: walk.indexByName,
            stageCount: walk.stageCount)
    }
}

/// What walking the stages found, by stage index.
struct StageReferences {
    var stageErrors: [Int: any Error] = [:]
    /// BuildKit dispatches stages in file order, so a COPY from a later stage fails when its stage is
    /// dispatched; kept apart from stageErrors so that a cycle through it is still reported as one.
    var laterStageErrors: [Int: DockerfileError] = [:]
    var argumentsByStage: [Int: Set<String>] = [:]
}

/// One stage on its walk through its instructions. What it holds when an instruction fails is kept: a stage
/// built on this one inherits the scope as far as it got.
private struct StageWalk {
    var stage: PlannedStage
    /// The ARGs and ENVs so far, which later expansions see.
    var scope: StageScope
    var dependencies: Set<Int>
    var declaredArguments: Set<String> = []
    /// The first reference to a stage defined after this one.
    var laterStageError: DockerfileError?
    let indexByName: [String: Int]
    let stageCount: Int
    let globals: GlobalArgumentScope
}
