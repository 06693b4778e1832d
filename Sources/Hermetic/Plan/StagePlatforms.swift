/// The platform each needed stage of a plan builds for, as BuildKit's dispatchState.platform: a stage built
/// on another stage takes that stage's platform; otherwise its `FROM --platform` when given, else the target
/// platform. Until emulation exists, a RUN step for a platform this host cannot execute is refused before
/// any step of the build runs, rather than failing inside the step with `Exec format error`.
struct StagePlatforms {
    var byStage: [Int: Platform] = [:]

    /// Parses every needed stage's `FROM --platform` (a bad one fails here, before anything runs).
    init(plan: BuildPlan, target: Platform) throws {
        // buildOrder lists a stage after the stages it is built on.
        for index in plan.buildOrder {
            let stage = plan.stages[index]
            let explicit = try Self.fromPlatform(of: stage, file: plan.file)
            if case .stage(let parent) = stage.base {
                byStage[index] = byStage[parent] ?? explicit ?? target
            } else {
                byStage[index] = explicit ?? target
            }
        }
    }

    /// A stage's `FROM --platform` value (after expansion), parsed; nil when it has none.
    static func fromPlatform(of stage: PlannedStage, file: String) throws -> Platform? {
        guard let text = stage.platform else { return nil }
        let line = stage.from.range.start.line
        guard !text.isEmpty else {
            var written = ""
            if case .from(let from) = stage.from.kind { written = from.platform ?? "" }
            throw DockerfileError(
                file: file, line: line, message: "FROM --platform: empty platform value from expression \(written)")
        }
        do {
            return try Platform(parsing: text)
        } catch let error as Platform.ParseError {
            throw DockerfileError(file: file, line: line, message: "FROM --platform=\(text): \(error.reason)")
        }
    }

    /// The image is labelled with the target platform, so the target stage must serve it: a target stage
    /// built for another platform (its `FROM --platform`, or its base stage's) is refused rather than
    /// labelled with a platform its content is not. BuildKit labels it with the requested platform, or
    /// with the stage's own when none was requested; here the target is then the host's, which the
    /// message says, with the `--platform` that builds that stage's image.
    func checkTargetStage(of plan: BuildPlan, target: Platform, requested: Bool) throws {
        guard let own = byStage[plan.target], !own.serves(target) else { return }
        let stage = plan.stages[plan.target]
        let wanted =
            requested
            ? "the requested \(target)" : "the default \(target) (this host's; pass --platform \(own) to build for it)"
        throw DockerfileError(
            file: plan.file, line: stage.from.range.start.line,
            message: "the target stage \"\(stage.displayName)\" is built for \(own) by FROM --platform, not \(wanted)")
    }

    /// Refuses the first RUN of a needed stage whose platform `host` does not run natively.
    func checkRunSteps(in plan: BuildPlan, host: Platform = .host) throws {
        for index in plan.buildOrder {
            guard let platform = byStage[index] else { continue }
            for instruction in plan.stages[index].instructions {
                guard case .run = instruction.kind else { continue }
                try Self.checkRunnable(platform, line: instruction.range.start.line, file: plan.file, host: host)
            }
        }
    }

    /// One RUN step (also one an ONBUILD trigger of the base brings in) for `platform`.
    static func checkRunnable(_ platform: Platform, line: Int, file: String, host: Platform = .host) throws {
        guard platform.runsNatively(on: host) else {
            throw DockerfileError(
                file: file, line: line, message: "RUN for \(platform) cannot run on this \(host) host (no emulation)")
        }
    }
}
