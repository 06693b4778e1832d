// Execute/ — a `BuildPlan` in; one `BuiltImage` per platform out (config, layers as tars, the stage's
// root filesystem) and a `BuildRecord` of what was used. Bases are resolved and unpacked, RUN steps run
// in the sandbox, COPY/ADD are planned and written; each RUN/COPY/ADD is first looked up in the build
// cache (StepCache) and stored there after it ran.

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A layer that belongs to an image being built: its descriptor and where its verified blob lies.
struct LayerRecord: Sendable {
    var descriptor: Descriptor
    var diffID: Digest
    var blobPath: String
    /// Where the layer comes from, for errors (`blobPath` is a workspace copy): see `displayName`.
    var origin = ""
    /// Made by this build, so an uncompressed tar until the exporter compresses it (a base image's
    /// layers keep the blob they came as).
    var madeByBuild = false
    /// `blobPath` is the store's copy, checked when it was stored: a damaged one is named with the way out.
    var storedCopy = false
    /// Written by this build, which hashed it as it wrote it (not a cache hit's stored tar).
    var hashedThisBuild = false
}

/// The state of a stage after its instructions ran.
struct StageState {
    var rootfs: String
    var layers: [LayerRecord]
    var config: ImageConfig
    var scope: StageScope
    /// Set once CMD is given in this stage: ENTRYPOINT then keeps it (BuildKit's rule).
    var commandSet = false
    /// The cache key of the last RUN/COPY/ADD, or of the stage's start (its base): the next step's parent.
    var cacheKey: CacheKey?
    /// The cache keys of this stage's RUN/COPY/ADD steps, after those of the stage it is built `FROM`:
    /// what `--cache-to mode=min` exports for the target stage.
    var stepKeys: [CacheKey] = []
    /// How many of `layers` are applied to `rootfs`. A stage's filesystem is made only when a step reads
    /// it (`materialize`): a build whose steps are all cache hits unpacks nothing.
    var applied = 0
    /// `rootfs` is a read-only overlay of snapshots (StageRoots.swift), shared by the stages that have the
    /// same layers; otherwise a directory of this stage's own.
    var rootIsReadOnlyMount = false
}

/// An image ready to export for one platform.
struct BuiltImage {
    var platform: Platform
    var config: ImageConfig
    var layers: [LayerRecord]
    var rootfs: String
    /// The cache keys of the steps of the target stage and of the stages it is built `FROM`.
    var stepKeys: [CacheKey] = []
}

/// Executes the stages of one `BuildPlan` (one platform) on root filesystems kept in `workspace`; each
/// instruction updates the stage's config, or writes one layer and applies it. `StageScheduler` runs each
/// stage on a copy of it (`forStage`), stages that do not depend on each other at the same time.
struct StageExecutor {
    let plan: BuildPlan
    let platform: Platform
    let context: BuildContext
    let resolver: ImageResolver
    private(set) var workspace: String
    let sourceDateEpoch: Int64
    let buildArguments: [String: String]
    private(set) var log: BuildLog
    let lexer: ShellLexer
    private(set) var runOptions: RunOptions
    /// The `--secret` values (read once): masked in step output, searched for in every layer made.
    let secretValues: [(id: String, value: [UInt8])]

    var stages: [Int: StageState] = [:]
    private var imageRoots: [String: String] = [:]
    private var counter = 0
    /// Inputs used and layers made, for provenance.
    var record = BuildRecord()
    /// Scratch filesystems mounted for RUN steps (see `mountScratchIfNeeded`).
    var temporaryMounts: [String] = []
    /// Copies of a stage's filesystem made for RUN steps (removed with `temporaryMounts`).
    var temporaryTrees: [String] = []
    /// How RUN steps get their root: from `RunOptions`, and `.copy` once overlayfs failed in `.automatic`.
    var rootMechanism: RunRootMechanism
    /// Whether the build said that steps get fewer capabilities than Docker's default set.
    var warnedAboutCapabilities = false
    /// Whether the build said that root steps run without a process limit here.
    var warnedAboutPidsLimit = false
    /// The stage being run, for naming layers in provenance.
    private var currentStage = ""
    /// The stage being run, for the planned sources of its RUN mounts.
    private var currentStageIndex: Int?
    /// The build cache (nil: steps always run and nothing is kept).
    var stepCache: StepCacheSettings?
    /// The build context's digest, hashed once per build when a RUN's bind of the context needs it.
    var contextDigest: SharedContextDigest
    /// The platform each needed stage builds for (its RUN steps run for it).
    private(set) var stagePlatforms: [Int: Platform] = [:]
    /// In a multi-platform build, the platform that starts every progress name (`[linux/arm64 2/3]`).
    var progressPlatform: String?
    /// Unpacked layers kept in the store (nil: each stage's layers are unpacked into the workspace).
    var snapshots: SnapshotStore?
    /// Read-only roots mounted this build, by the chain id of their top layer.
    var snapshotMounts: [Digest: String] = [:]
    /// The empty bottom lower of a one-snapshot root.
    var emptySnapshotLower: String?
    /// The finished stages of this platform, shared by the stages that read them at the same time (nil:
    /// `stages` alone).
    var finishedStages: FinishedStages?

    init(
        plan: BuildPlan, platform: Platform, context: BuildContext, resolver: ImageResolver, workspace: String,
        sourceDateEpoch: Int64, buildArguments: [String: String], log: BuildLog, runOptions: RunOptions,
        contextDigest: SharedContextDigest? = nil
    ) {
        self.contextDigest = contextDigest ?? SharedContextDigest(context)
        self.runOptions = runOptions
        rootMechanism = runOptions.rootMechanism
        secretValues = SecretTaint(secrets: runOptions.secrets, environment: runOptions.environment).values()
        self.plan = plan
        self.platform = platform
        self.context = context
        self.resolver = resolver
        self.workspace = workspace
        self.sourceDateEpoch = sourceDateEpoch
        self.buildArguments = buildArguments
        self.log = log
        self.lexer = ShellLexer(escape: plan.escape)
    }

    var file: String { plan.file }

    /// Finds the platform each needed stage builds for; call once before the first stage runs.
    mutating func preparePlatforms() throws {
        stagePlatforms = try StagePlatforms(plan: plan, target: platform).byStage
    }

    /// A copy that builds one stage on its own: its own directory under `workspace`, progress lane and
    /// records, and of the finished stages only those it depends on (so what it sees does not depend on
    /// which other stages happen to be done).
    func forStage(_ index: Int, lane: Int, cancellation: StageCancellation) throws -> StageExecutor {
        var copy = self
        copy.workspace = workspace + "/s\(index)"
        try FileSystem.makeDirectory(copy.workspace)
        copy.counter = 0
        copy.imageRoots = [:]
        // Roots this copy mounts lie in its own workspace directory.
        copy.snapshotMounts = [:]
        copy.emptySnapshotLower = nil
        copy.record = BuildRecord()
        copy.temporaryMounts = []
        copy.temporaryTrees = []
        copy.log = log.inLane(lane)
        copy.runOptions.cancellation = cancellation
        copy.stages = [:]
        for dependency in plan.stages[index].dependencies {
            copy.stages[dependency] = finishedStages?.state(of: dependency) ?? stages[dependency]
        }
        return copy
    }

    /// The image of the target stage, once it is built.
    func builtImage(target: StageState?) throws -> BuiltImage {
        guard let target else {
            throw DockerfileError(file: file, line: 1, message: "internal: target stage was not built")
        }
        var config = target.config
        config.architecture = platform.architecture
        config.os = platform.os
        config.variant = platform.variant
        config.created = RFC3339.format(sourceDateEpoch)
        return BuiltImage(
            platform: platform, config: config, layers: target.layers, rootfs: target.rootfs, stepKeys: target.stepKeys)
    }

    mutating func nextDirectory(_ label: String) throws -> String {
        counter += 1
        let path = "\(workspace)/\(counter)-\(label)"
        try FileSystem.makeDirectory(path)
        return path
    }

    // MARK: Stages

    /// Runs one stage's FROM and instructions; its state is then in `stages`.
    mutating func runStage(_ stage: PlannedStage) async throws {
        let steps = stage.instructions.count + 1
        log.startStep(progressName(stage, step: 1, of: steps, Self.firstLine(stage.from.original)))
        currentStage = stage.displayName
        currentStageIndex = stage.index
        var state = try startState(for: stage)
        // ONBUILD triggers of the base run first, then are cleared (Docker's rule).
        let triggers = state.config.config?.onBuild ?? []
        if !triggers.isEmpty {
            state.config.config?.onBuild = nil
            for trigger in triggers {
                // Triggers come from the base image (data, maybe hostile); errors point at this stage's FROM.
                let parsed: Dockerfile
                do {
                    parsed = try DockerfileParser.parse(Array(trigger.utf8), file: file)
                } catch {
                    throw DockerfileError(
                        file: file, line: stage.from.range.start.line,
                        message: "ONBUILD trigger of the base image: \(error.message)")
                }
                // A trigger is one instruction (with its heredocs), as BuildKit requires.
                guard parsed.instructions.count == 1 else {
                    throw DockerfileError(
                        file: file, line: stage.from.range.start.line,
                        message: "ONBUILD trigger of the base image: onbuild trigger should be a single expression")
                }
                for var instruction in parsed.instructions {
                    instruction.range = stage.from.range
                    try Planner.checkFromValues(instruction, lexer: lexer, file: file)
                    switch instruction.kind {
                    case .from, .onbuild, .maintainer:
                        throw DockerfileError(
                            file: file, line: stage.from.range.start.line,
                            message: "the base image's ONBUILD trigger \"\(instruction.original)\" is not allowed")
                    default:
                        try await executeNamingLine(instruction, position: nil, in: stage, state: &state)
                    }
                }
            }
        }
        log.endStep()
        for (position, instruction) in stage.instructions.enumerated() {
            // Another stage failed: this one stops before its next step.
            try runOptions.cancellation?.check()
            log.startStep(progressName(stage, step: position + 2, of: steps, Self.firstLine(instruction.original)))
            try await executeNamingLine(instruction, position: position, in: stage, state: &state)
            log.endStep()
        }
        stages[stage.index] = state
    }

    /// Runs one instruction. An error that names no Dockerfile line yet (a file system call that failed, a
    /// WORKDIR onto a file, a layer that cannot be applied) is given this instruction's, as all others have.
    private mutating func executeNamingLine(
        _ instruction: Instruction, position: Int?, in stage: PlannedStage, state: inout StageState
    ) async throws {
        do {
            try await execute(instruction, position: position, in: stage, state: &state)
        } catch let error as DockerfileError {
            throw error
        } catch let error as any HermeticError {
            throw fail(instruction, error.description)
        }
    }

    /// A step's name as BuildKit's prefixCommand writes it: `[PLATFORM STAGE I/N] INSTRUCTION`, the
    /// platform only in a multi-platform build, the stage's name only when the Dockerfile has several, and
    /// I padded to N's width.
    func progressName(_ stage: PlannedStage, step: Int, of steps: Int, _ text: String) -> String {
        var prefix = "["
        if let progressPlatform { prefix += progressPlatform + " " }
        if plan.stages.count > 1 { prefix += stage.displayName + " " }
        let number = String(step)
        prefix += String(repeating: " ", count: max(String(steps).count - number.count, 0)) + number
        return prefix + "/\(steps)] " + text
    }

    /// What the planner resolved a RUN mount's `from=` to (`key` is `POSITION:MOUNT`), in the stage being run.
    func plannedMountSource(_ key: String?) -> StageSource? {
        guard let key, let index = currentStageIndex else { return nil }
        return plan.stages[index].mountSources[key]
    }

    /// Steps this plan runs: each stage's FROM and instructions.
    var stepCount: Int {
        plan.buildOrder.reduce(0) { $0 + plan.stages[$1].instructions.count + 1 }
    }

    /// Progress shows an instruction's first line; heredoc bodies and continuations stay out of it.
    static func firstLine(_ text: String) -> String {
        text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? text
    }

    private mutating func startState(for stage: PlannedStage) throws -> StageState {
        let rootfs = try nextDirectory("rootfs")
        switch stage.base {
        case .scratch:
            // BuildKit's empty image (emptyImage in image.go): WorkingDir "/" and a default PATH in Env.
            var config = ImageConfig.empty
            var container = ContainerConfig()
            container.env = [Self.defaultPath]
            container.workingDir = "/"
            config.config = container
            return StageState(
                rootfs: rootfs, layers: [], config: config, scope: StageScope(environmentLines: [Self.defaultPath]),
                cacheKey: CacheKey(digest: Digest.sha256(of: Array("scratch".utf8))))
        case .stage(let parent):
            guard let parentState = stages[parent] else {
                throw DockerfileError(
                    file: file, line: stage.from.range.start.line, message: "internal: stage \(parent) not built")
            }
            // The stage's ARGs carry over with their values (BuildKit's dispatchState.init appends the base's
            // buildArgs and starts from its state), as its ENV does.
            var state = parentState
            if !parentState.rootIsReadOnlyMount {
                // The parent's directory is its own (later layers are unpacked into it); a mount is shared.
                state.rootfs = rootfs
                state.applied = 0
            }
            state.scope = StageScope(inheriting: parentState.scope)
            state.commandSet = false
            return state
        case .image(let reference):
            // `FROM --platform=…` picks the base for that platform (e.g. `$BUILDPLATFORM` for cross tools).
            let stagePlatform = try StagePlatforms.fromPlatform(of: stage, file: file)
            let (image, layers) = try loadImage(
                reference, line: stage.from.range.start.line, platform: stagePlatform, naming: "FROM \(reference)")
            var config = image.config
            config.history = config.history ?? []
            var container = config.config ?? ContainerConfig()
            var scope = StageScope(environmentLines: container.env ?? [])
            // BuildKit's dispatchStages "make sure that PATH is always set": a base without one gets the
            // default appended, in the config and for the stage's instructions (not on Windows, left to the OS).
            if !scope.environment.contains(where: { $0.name == "PATH" }), (stagePlatform ?? platform).os != "windows" {
                container.env = (container.env ?? []) + [Self.defaultPath]
                scope = StageScope(environmentLines: container.env ?? [])
            }
            config.config = container
            var state = StageState(
                rootfs: rootfs, layers: layers, config: config, scope: scope,
                cacheKey: CacheKey(digest: Digest.sha256(of: Array("image \(image.manifestDescriptor.digest)".utf8))))
            // A base's layers are unpacked (or their snapshots found) at FROM, whatever the cache says: each is
            // checked as hostile input before anything of it reaches an output (this build's own layers can
            // wait for a step to read them).
            try materialize(&state)
            return state
        case .namedDirectory(let name):
            throw DockerfileError(
                file: file, line: stage.from.range.start.line,
                message: "FROM \(name): a directory context cannot be a base image")
        }
    }

    /// Resolves an image reference to a pinned image, copies and verifies its blobs into the workspace.
    /// `naming` names the instruction in an error (`FROM base`, `--from=base`).
    private mutating func loadImage(_ reference: String, line: Int, platform wanted: Platform?, naming: String) throws
        -> (ResolvedImage, [LayerRecord])
    {
        let pinned: ImageResolver.PinnedImage
        do {
            pinned = try resolver.resolve(reference)
        } catch let error as ResolutionError {
            throw DockerfileError(file: file, line: line, message: error.description)
        }
        let reader = try OCILayoutReader(path: pinned.layoutPath)
        let image: ResolvedImage
        do {
            image = try reader.resolveImage(reference: pinned.tag, digest: pinned.digest, platform: wanted ?? platform)
        } catch let error as LayoutError where error.reason == LayoutError.notInLayout && error.digest == pinned.digest
        {
            // Name the pin's source and the line: the layout is fine, the pin (often a stale lock) is not.
            throw DockerfileError(file: file, line: line, message: pinned.notInLayoutMessage)
        } catch let error as PlatformMismatchError {
            throw DockerfileError(file: file, line: line, message: "\(naming): \(error)")
        }
        let use = BuildRecord.ImageUse(
            reference: reference, pinnedDigest: pinned.digest,
            manifestDigest: image.manifestDescriptor.digest, pinnedBy: pinned.pinnedBy)
        if !record.images.contains(use) { record.images.append(use) }
        let diffIDs = image.config.rootfs.diffIDs
        guard diffIDs.count == image.manifest.layers.count else {
            throw DockerfileError(
                file: file, line: line,
                message:
                    "image \"\(reference)\" (manifest \(image.manifestDescriptor.digest), \(pinned.source)): the config lists \(diffIDs.count) diff_ids for \(image.manifest.layers.count) layers"
            )
        }
        var layers: [LayerRecord] = []
        for (descriptor, diffID) in zip(image.manifest.layers, diffIDs) {
            let path = try storedBlob(descriptor, from: reader)
            let storedCopy = stepCache != nil
            var exported = descriptor
            exported.mediaType = MediaType.ociLayerMediaType(forAny: descriptor.mediaType)
            exported.annotations = nil
            exported.urls = nil
            layers.append(
                LayerRecord(
                    descriptor: exported, diffID: diffID, blobPath: path,
                    origin: "of image \"\(reference)\" (\(pinned.source))", storedCopy: storedCopy))
        }
        return (image, layers)
    }

    /// A base image's blob, copied (its digest checked as it streams) into the store once, where later
    /// builds find it by digest; without a store, into the workspace.
    private mutating func storedBlob(_ descriptor: Descriptor, from reader: OCILayoutReader) throws -> String {
        guard let store = stepCache?.store else {
            let path = try nextDirectory("blob") + "/" + descriptor.digest.hex
            try reader.copyBlob(descriptor, to: path)
            return path
        }
        if store.hasBlob(descriptor.digest) { return store.blobPath(descriptor.digest) }
        let temporary = store.temporaryDirectory + "/base-" + UUID().uuidString
        try reader.copyBlob(descriptor, to: temporary)
        return try store.adopt(fileAt: temporary, as: descriptor.digest)
    }

    func apply(_ layer: LayerRecord, to root: String) throws {
        _ = try LayerApplier().apply(
            blobAt: layer.blobPath, mediaType: layer.descriptor.mediaType, expectedDiffID: layer.diffID, toRoot: root,
            name: layer.displayName)
    }

    /// The root filesystem an image reference unpacks to (for `COPY --from=image`), made once per build.
    mutating func imageRoot(_ reference: String, line: Int) throws -> String {
        if let root = imageRoots[reference] { return root }
        let (_, layers) = try loadImage(reference, line: line, platform: nil, naming: "--from=\(reference)")
        let root = try unpackedImage(layers)
        imageRoots[reference] = root
        return root
    }

    /// Applies a layer this build made (or found in its cache) to the stage and records it.
    mutating func commitLayer(_ layer: LayerRecord, to state: inout StageState, line: Int, createdBy: String) throws {
        state.layers.append(layer)
        state.config.rootfs.diffIDs.append(layer.diffID)
        self.record.layers.append(
            BuildRecord.LayerMade(
                platform: platform.description, stage: currentStage, line: line,
                createdBy: createdBy, digest: layer.descriptor.digest, diffID: layer.diffID))
    }

    // MARK: Rules

    static let defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    static func joinWorkdir(_ current: String?, _ path: String) -> String {
        let combined = path.hasPrefix("/") ? path : (current ?? "/") + "/" + path
        var parts: [Substring] = []
        for part in combined.split(separator: "/") {
            if part == "." { continue }
            if part == ".." {
                if !parts.isEmpty { parts.removeLast() }
                continue
            }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

}

extension Array {
    /// nil for an empty array (a config field that `omitempty` leaves out).
    var nilIfEmpty: [Element]? { isEmpty ? nil : self }
}
