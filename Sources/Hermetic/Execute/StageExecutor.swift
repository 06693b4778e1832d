// Execute/ — a `BuildPlan` in; one `BuiltImage` per platform out (config, layers as tars, the stage's
// root filesystem) and a `BuildRecord` of what was used. Bases are resolved and unpacked, RUN steps run
// in the sandbox, COPY/ADD are planned and written; each RUN/COPY/ADD is first looked up in the build
// cache (StepCache) and stored there after it ran.

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
    /// How many of `layers` are applied to `rootfs`. A stage's filesystem is made only when a step reads
    /// it (`materialize`): a build whose steps are all cache hits unpacks nothing.
    var applied = 0
}

/// An image ready to export for one platform.
struct BuiltImage {
    var platform: Platform
    var config: ImageConfig
    var layers: [LayerRecord]
    var rootfs: String
}

/// Executes the stages of one `BuildPlan` (one platform), in plan order, on root filesystems kept in
/// `workspace`. Each instruction updates the stage's config, or writes one layer and applies it.
struct StageExecutor {
    let plan: BuildPlan
    let platform: Platform
    let context: BuildContext
    let resolver: ImageResolver
    let workspace: String
    let sourceDateEpoch: Int64
    let buildArguments: [String: String]
    let log: BuildLog
    let lexer: ShellLexer
    let runOptions: RunOptions
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
    /// The build cache (nil: steps always run and nothing is kept).
    var stepCache: StepCacheSettings?
    /// The platform each needed stage builds for (its RUN steps run for it).
    private var stagePlatforms: [Int: Platform] = [:]
    /// In a multi-platform build, the platform that starts every progress name (`[linux/arm64 2/3]`).
    var progressPlatform: String?

    init(
        plan: BuildPlan, platform: Platform, context: BuildContext, resolver: ImageResolver, workspace: String,
        sourceDateEpoch: Int64, buildArguments: [String: String], log: BuildLog, runOptions: RunOptions
    ) {
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

    mutating func buildTarget() async throws -> BuiltImage {
        stagePlatforms = try StagePlatforms(plan: plan, target: platform).byStage
        for index in plan.buildOrder {
            try await runStage(plan.stages[index])
        }
        guard let target = stages[plan.target] else {
            throw DockerfileError(file: file, line: 1, message: "internal: target stage was not built")
        }
        var config = target.config
        config.architecture = platform.architecture
        config.os = platform.os
        config.variant = platform.variant
        config.created = RFC3339.format(sourceDateEpoch)
        return BuiltImage(platform: platform, config: config, layers: target.layers, rootfs: target.rootfs)
    }

    mutating func nextDirectory(_ label: String) throws -> String {
        counter += 1
        let path = "\(workspace)/\(counter)-\(label)"
        try FileSystem.makeDirectory(path)
        return path
    }

    // MARK: Stages

    private mutating func runStage(_ stage: PlannedStage) async throws {
        let steps = stage.instructions.count + 1
        log.startStep(progressName(stage, step: 1, of: steps, Self.firstLine(stage.from.original)))
        currentStage = stage.displayName
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
            state.rootfs = rootfs
            state.applied = 0
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
            return StageState(
                rootfs: rootfs, layers: layers, config: config, scope: scope,
                cacheKey: CacheKey(digest: Digest.sha256(of: Array("image \(image.manifestDescriptor.digest)".utf8))))
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
                    "image \"\(reference)\" (manifest \(image.manifestDescriptor.digest) in \(pinned.layoutPath)): the config lists \(diffIDs.count) diff_ids for \(image.manifest.layers.count) layers"
            )
        }
        let blobs = try nextDirectory("blobs")
        var layers: [LayerRecord] = []
        for (descriptor, diffID) in zip(image.manifest.layers, diffIDs) {
            let path = blobs + "/" + descriptor.digest.hex
            if !FileSystem.exists(path) { try reader.copyBlob(descriptor, to: path) }
            var exported = descriptor
            exported.mediaType = MediaType.ociLayerMediaType(forAny: descriptor.mediaType)
            exported.annotations = nil
            exported.urls = nil
            layers.append(
                LayerRecord(
                    descriptor: exported, diffID: diffID, blobPath: path,
                    origin: "of image \"\(reference)\" (layout \(pinned.layoutPath))"))
        }
        return (image, layers)
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
        let root = try nextDirectory("image-rootfs")
        for layer in layers { try apply(layer, to: root) }
        imageRoots[reference] = root
        return root
    }

    // MARK: Instructions

    private func fail(_ instruction: Instruction, _ message: String) -> DockerfileError {
        DockerfileError(file: file, line: instruction.range.start.line, message: message)
    }

    private mutating func execute(
        _ instruction: Instruction, position: Int?, in stage: PlannedStage,
        state: inout StageState
    ) async throws {
        let scope = state.scope
        let expanded = try instruction.expanded(lookup: { scope.lookup($0) }, lexer: lexer, file: file)
        let line = instruction.range.start.line
        var container = state.config.config ?? ContainerConfig()
        var emptyLayer = true
        switch expanded.kind {
        case .from:
            throw fail(instruction, "FROM cannot run inside a stage (an ONBUILD trigger of the base image asks for it)")
        case .arg(let declarations):
            // ARG then adds a history entry like the other config instructions (BuildKit's dispatchArg commits
            // one); its text is the source line, so a --build-arg value never reaches the history.
            for declaration in declarations {
                if let given = buildArguments[declaration.name] {
                    state.scope.declareArgument(declaration.name, value: given)
                } else if let value = declaration.defaultValue {
                    // Expanded now, so `ARG A=1 B=$A` gives B the A just declared (BuildKit's dispatchArg).
                    let scope = state.scope
                    let expanded: String
                    do {
                        expanded = try lexer.processWord(value, lookup: { scope.lookup($0) })
                    } catch {
                        throw fail(instruction, "\(error)")
                    }
                    state.scope.declareArgument(declaration.name, value: expanded)
                } else {
                    // The global value, if any; with none the name keeps what it had (see declareArgument).
                    let global =
                        plan.globalArguments.last(where: { $0.name == declaration.name })?.value
                        ?? plan.predefinedArguments[declaration.name]
                    state.scope.declareArgument(declaration.name, value: global)
                }
            }
        case .env(let pairs):
            for pair in pairs {
                guard !pair.key.isEmpty else { throw fail(instruction, "ENV names can not be blank") }
                state.scope.setEnvironment(pair.key, pair.value)
            }
            container.env = state.scope.environmentLines
        case .label(let pairs):
            var labels = container.labels ?? [:]
            for pair in pairs { labels[pair.key] = pair.value }
            container.labels = labels
        case .maintainer(let name):
            state.config.author = name
        case .user(let user):
            container.user = user
        case .workdir(let path):
            // BuildKit's NormalizeWorkdir refuses an empty path (a WORKDIR whose variables expand to nothing).
            guard !path.isEmpty else { throw fail(instruction, "normalizing workdir: cannot normalize nothing") }
            let resolved = Self.joinWorkdir(container.workingDir, path)
            container.workingDir = resolved
            // BuildKit creates a missing WORKDIR owned by the current USER, read as a `--chown` value (its
            // mkdir takes `llb.WithUser(USER)`): `USER 1001` gives 1001:1001, a name its passwd uid and gid.
            try materialize(&state)
            var owner: (uid: UInt32, gid: UInt32) = (0, 0)
            if let user = container.user, !user.isEmpty {
                do {
                    owner = try UserDatabase(root: state.rootfs).resolveOwner(user)
                } catch {
                    throw fail(instruction, "WORKDIR \(path): USER \(user): \(error)")
                }
            }
            let entries = try DirectoryCreation.entries(
                for: resolved, inRoot: state.rootfs, sourceDateEpoch: sourceDateEpoch,
                owner: owner)
            if !entries.isEmpty {
                try addLayer(entries, to: &state, line: line, createdBy: instruction.original)
                emptyLayer = false
            }
        case .expose(let ports):
            var exposed = container.exposedPorts ?? [:]
            for port in ports {
                for normalized in try PortSpec.expand(port, line: line, file: file) {
                    exposed[normalized] = EmptyObject()
                }
            }
            container.exposedPorts = exposed
        case .volume(let paths):
            var volumes = container.volumes ?? [:]
            for path in paths {
                guard !path.isEmpty else { throw fail(instruction, "VOLUME specified can not be an empty string") }
                volumes[path] = EmptyObject()
            }
            container.volumes = volumes
        case .stopSignal(let signal):
            guard Self.isValidSignal(signal) else { throw fail(instruction, "STOPSIGNAL: invalid signal: \(signal)") }
            container.stopSignal = signal
        case .cmd(let form):
            // `CMD []` clears the command: BuildKit stores an empty list, which the config leaves out.
            container.cmd = Self.commandLine(form, shell: container.shell).nilIfEmpty
            // BuildKit's dispatchCmd sets ArgsEscaped for either form, on Linux too (Docker's image spec keeps
            // the field for Windows); ENTRYPOINT leaves it, and a base image's value stays as it was.
            container.argsEscaped = true
            state.commandSet = true
        case .entrypoint(let form):
            container.entrypoint = Self.commandLine(form, shell: container.shell).nilIfEmpty
            if !state.commandSet { container.cmd = nil }
        case .shell(let shell):
            guard !shell.isEmpty else { throw fail(instruction, "SHELL requires at least one argument") }
            container.shell = shell
        case .healthcheck(let health):
            container.healthcheck = try HealthcheckConversion.config(
                health, shell: container.shell, line: line, file: file)
        case .onbuild(let trigger):
            container.onBuild = (container.onBuild ?? []) + [trigger]
            // BuildKit's dispatchOnbuild commits no history entry: only the trigger is stored.
            state.config.config = container
            return
        case .run(let run):
            // Checked at planning too; here for a RUN that an ONBUILD trigger of the base brings in.
            try StagePlatforms.checkRunnable(stagePlatforms[stage.index] ?? platform, line: line, file: file)
            state.config.config = container
            let key = try cacheKey(
                for: instruction, heredocs: run.heredocs, state: state,
                inputs: try runInputs(run, position: position, scope: state.scope, line: line))
            let replay = try replayCachedStep(
                key, stage: stage, state: &state, line: line, createdBy: instruction.original)
            state.cacheKey = key
            if replay.hit {
                emptyLayer = !replay.madeLayer
            } else {
                let stepsBefore = record.steps.count
                try materialize(&state)
                let entries = try runStep(
                    run, instruction: instruction, position: position, stage: stage, state: &state)
                if !entries.isEmpty {
                    try addLayer(entries, to: &state, line: line, createdBy: instruction.original)
                    emptyLayer = false
                }
                releaseTemporaryMounts()
                try storeCachedStep(
                    key, state: state, madeLayer: !entries.isEmpty,
                    run: record.steps.count > stepsBefore ? record.steps.last : nil)
            }
        case .copy(let copy):
            state.config.config = container
            var sourceStage: Int?
            if case .stage(let index)? = position.flatMap({ stage.sources[$0] })
                ?? copy.from.flatMap({ stage.triggerSources[$0] })
            {
                sourceStage = index
            }
            // The key reads the sources only, so a hit needs neither this stage's filesystem nor the source's.
            var planned: [LayerEntry]?
            let input: String
            if let sourceStage, let source = stages[sourceStage] {
                input = try stageInput(source)
            } else if copy.sources.contains(where: InstructionBuilder.isRemote) {
                try materialize(&state)
                planned = try await copyEntries(
                    expandedCopy: copy, instruction: instruction, position: position, stage: stage, state: state)
                input = try entriesDigest(planned ?? [])
            } else {
                let sources = try await copyEntries(
                    expandedCopy: copy, instruction: instruction, position: position, stage: stage, state: state,
                    keyRoot: try nextDirectory("key-root"))
                input = try entriesDigest(sources)
            }
            let key = try cacheKey(for: instruction, heredocs: copy.heredocs, state: state, inputs: [input])
            let replay = try replayCachedStep(
                key, stage: stage, state: &state, line: line, createdBy: instruction.original)
            state.cacheKey = key
            if !replay.hit {
                try materialize(&state)
                var entries = planned ?? []
                if planned == nil {
                    entries = try await copyEntries(
                        expandedCopy: copy, instruction: instruction, position: position, stage: stage, state: state)
                }
                try addLayer(entries, to: &state, line: line, createdBy: instruction.original)
                try storeCachedStep(key, state: state, madeLayer: true, run: nil)
            }
            container = state.config.config ?? container
            emptyLayer = false
        }
        state.config.config = container
        state.config.history =
            (state.config.history ?? []) + [
                History(
                    created: RFC3339.format(sourceDateEpoch), createdBy: Self.historyText(instruction, scope: scope),
                    comment: "hermetic", emptyLayer: emptyLayer ? true : nil)
            ]
    }

    private mutating func addLayer(
        _ entries: [LayerEntry], to state: inout StageState, line: Int,
        createdBy: String = ""
    ) throws {
        // With a cache, the tar is written inside the store and moved into it once it is known clean.
        let blobs = try stepCache?.store.temporaryDirectory ?? nextDirectory("layer")
        // A secret's value never goes into a layer, whichever step put it in the filesystem.
        let scanner = secretValues.isEmpty ? nil : SecretStreamScanner(secretValues)
        // Uncompressed: a layer is compressed only if it is exported (ImageExporter.compressingMadeLayers).
        var writer = LayerWriter(sourceDateEpoch: sourceDateEpoch, compression: .uncompressed)
        if let scanner {
            writer.tarObserver = { buffer in scanner.consume(buffer) }
        }
        var written: WrittenLayer
        do {
            written = try writer.write(entries, into: blobs)
        } catch let error as LayerError {
            throw DockerfileError(file: file, line: line, message: error.description)
        }
        if let id = scanner?.found {
            unlink(written.blobPath)
            throw DockerfileError(
                file: file, line: line,
                message: "the value of secret \(id) would be written into this step's layer; refusing to write it")
        }
        if let store = stepCache?.store {
            written.blobPath = try store.adopt(fileAt: written.blobPath, as: written.diffID)
        }
        let record = LayerRecord(
            descriptor: Descriptor(mediaType: written.mediaType, digest: written.digest, size: written.compressedSize),
            diffID: written.diffID, blobPath: written.blobPath, origin: "made by \(file):\(line)", madeByBuild: true)
        try commitLayer(record, to: &state, line: line, createdBy: createdBy)
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

    /// The entries a COPY/ADD adds to `state`; with `keyRoot` (an empty directory), the entries it would add
    /// there without `--chown` lookups: what its sources are, for its cache key.
    private mutating func copyEntries(
        expandedCopy copy: CopyInstruction, instruction: Instruction, position: Int?,
        stage: PlannedStage, state: StageState, keyRoot: String? = nil
    ) async throws -> [LayerEntry] {
        let line = instruction.range.start.line
        // The planner checked what it could expand; a variable from the base image's ENV or an ONBUILD
        // trigger is only known here.
        if let violation = copy.sourceRuleViolation() { throw fail(instruction, violation) }
        let source =
            position.flatMap { stage.sources[$0] } ?? copy.from.flatMap { stage.triggerSources[$0] }
            ?? (copy.from.map { StageSource.image($0) })
        let sourceRoot: String
        var sourceContext: BuildContext
        switch source {
        case nil:
            sourceContext = context
            sourceRoot = context.root
        case .stage(let index)?:
            guard let other = try materializeStage(index) else {
                throw fail(instruction, "internal: stage \(index) not built")
            }
            sourceRoot = other.rootfs
            sourceContext = BuildContext(root: sourceRoot, ignore: DockerIgnore())
        case .image(let reference)?:
            if case .directory(let directory)? = resolver.namedContexts[reference] {
                sourceRoot = FileSystem.absolute(directory)
            } else {
                sourceRoot = try imageRoot(reference, line: line)
            }
            sourceContext = BuildContext(root: sourceRoot, ignore: DockerIgnore())
        case .namedDirectory(let directory)?:
            sourceRoot = directory
            sourceContext = BuildContext(root: sourceRoot, ignore: DockerIgnore())
        case .scratch?:
            throw fail(instruction, "COPY --from=scratch: scratch has no files")
        }
        var owner: (uid: UInt32, gid: UInt32)?
        // BuildKit's dispatchCopy takes an empty --chown (as written or expanded) as no --chown at all.
        if let chown = copy.chown, !chown.isEmpty, keyRoot == nil {
            do {
                owner = try UserDatabase(root: state.rootfs).resolveOwner(chown)
            } catch {
                throw fail(instruction, "\(copy.isAdd ? "ADD" : "COPY") --chown=\(chown): \(error)")
            }
        }
        let staging = try nextDirectory("staging")
        var remoteFiles: [String: (path: String, size: Int64)] = [:]
        for source in copy.sources where InstructionBuilder.isRemote(source) {
            guard let checksumText = copy.checksum, let checksum = try? Digest(parsing: checksumText) else {
                throw fail(instruction, "ADD \(source): --checksum must be sha256:<64 hex>")
            }
            do {
                remoteFiles[source] = try await RemoteFileFetcher().fetch(
                    source, checksum: checksum, stagingDirectory: staging)
                let use = BuildRecord.RemoteUse(url: source, checksum: checksum)
                if !record.remotes.contains(use) { record.remotes.append(use) }
            } catch let error as RemoteFileFetcher.FetchError {
                throw fail(instruction, error.description)
            }
        }
        var planner = CopyPlanner(
            sourceContext: sourceContext, destinationRoot: keyRoot ?? state.rootfs,
            workingDirectory: state.config.config?.workingDir ?? "/", sourceDateEpoch: sourceDateEpoch,
            stagingDirectory: staging)
        planner.remoteFiles = remoteFiles
        return try planner.entries(for: copy, owner: owner, line: line, file: file)
    }

    // MARK: Rules

    static let defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// History `created_by`: the instruction's source text; for RUN, also the NAMES of the build args it
    /// saw (BuildKit and Buildah write `|N NAME=value …`, which leaks values), on its first line, and its
    /// heredocs as written: they are the script (BuildKit records `/bin/sh -c SCRIPT` for `RUN <<EOF`).
    static func historyText(_ instruction: Instruction, scope: StageScope) -> String {
        guard case .run = instruction.kind else { return instruction.original }
        let names = scope.argumentsInEffect
        let firstLine =
            names.isEmpty
            ? instruction.original : instruction.original + " # build args: " + names.joined(separator: " ")
        return firstLine + instruction.heredocText
    }

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

    static func commandLine(_ form: CommandForm, shell: [String]?) -> [String] {
        switch form {
        case .exec(let arguments): return arguments
        case .shell(let text): return (shell ?? ["/bin/sh", "-c"]) + [text]
        }
    }

    /// moby/sys signal.ParseSignal, which BuildKit uses: any non-zero integer, or a name of its Linux map
    /// (case-insensitive, `SIG` optional), the real-time ones as `RTMIN`, `RTMIN+1`…`+15`, `RTMAX-14`…`-1`,
    /// `RTMAX`.
    static func isValidSignal(_ signal: String) -> Bool {
        if let number = Int(signal) { return number != 0 }
        let upper = signal.uppercased()
        let name = upper.hasPrefix("SIG") ? String(upper.dropFirst(3)) : upper
        let names: Set<String> = [
            "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE",
            "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU",
            "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
        ]
        let realTime = (1...15).map { "RTMIN+\($0)" } + (1...14).map { "RTMAX-\($0)" }
        return names.contains(name) || realTime.contains(name)
    }
}

extension Array {
    /// nil for an empty array (a config field that `omitempty` leaves out).
    var nilIfEmpty: [Element]? { isEmpty ? nil : self }
}
