// The instructions of a stage, one at a time: config instructions change the image config; WORKDIR,
// RUN and COPY/ADD may add a layer, RUN and COPY/ADD through the build cache (StepCache.swift).

#if canImport(Glibc)
    import Glibc
#endif

extension StageExecutor {
    // MARK: Instructions

    /// An instruction's error, at its Dockerfile line.
    func fail(_ instruction: Instruction, _ message: String) -> DockerfileError {
        DockerfileError(file: file, line: instruction.range.start.line, message: message)
    }

    /// Runs one instruction of a stage: a config instruction changes the image config; WORKDIR, RUN and
    /// COPY/ADD may add a layer. Each adds one history entry (ONBUILD none).
    mutating func execute(
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
            try declareArguments(declarations, instruction: instruction, state: &state)
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
            let madeLayer = try changeWorkdir(path, instruction: instruction, container: &container, state: &state)
            if madeLayer { emptyLayer = false }
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
            let madeLayer = try executeRun(
                run, instruction: instruction, position: position, stage: stage, state: &state)
            if madeLayer { emptyLayer = false }
        case .copy(let copy):
            state.config.config = container
            try await executeCopy(copy, instruction: instruction, position: position, stage: stage, state: &state)
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

    /// ARG: each name gets its `--build-arg` value, else its default (expanded now), else the global one.
    /// ARG then adds a history entry like the other config instructions (BuildKit's dispatchArg commits one);
    /// its text is the source line, so a --build-arg value never reaches the history.
    private func declareArguments(
        _ declarations: [ArgDeclaration], instruction: Instruction, state: inout StageState
    ) throws {
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
    }

    /// WORKDIR: sets the working directory and creates it when missing, in a layer; returns whether it
    /// made one.
    private mutating func changeWorkdir(
        _ path: String, instruction: Instruction, container: inout ContainerConfig, state: inout StageState
    ) throws -> Bool {
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
        guard !entries.isEmpty else { return false }
        try addLayer(entries, to: &state, line: instruction.range.start.line, createdBy: instruction.original)
        return true
    }

    /// RUN: replayed from the build cache on a hit, else run in the sandbox and stored in the cache.
    /// Returns whether the step has a layer.
    private mutating func executeRun(
        _ run: RunInstruction, instruction: Instruction, position: Int?, stage: PlannedStage,
        state: inout StageState
    ) throws -> Bool {
        let line = instruction.range.start.line
        let key = try cacheKey(
            for: instruction, heredocs: run.heredocs, state: state,
            inputs: try runInputs(run, position: position, scope: state.scope, line: line))
        let replay = try replayCachedStep(
            key, stage: stage, state: &state, line: line, createdBy: instruction.original)
        state.cacheKey = key
        if replay.hit { return replay.madeLayer }
        let stepsBefore = record.steps.count
        try materialize(&state)
        let entries = try runStep(
            run, instruction: instruction, position: position, stage: stage, state: &state)
        if !entries.isEmpty {
            try addLayer(entries, to: &state, line: line, createdBy: instruction.original)
        }
        releaseTemporaryMounts()
        try storeCachedStep(
            key, state: state, madeLayer: !entries.isEmpty,
            run: record.steps.count > stepsBefore ? record.steps.last : nil)
        return !entries.isEmpty
    }

    /// COPY/ADD: keyed by its sources alone (SPEC §10), so a hit needs neither this stage's filesystem nor
    /// the source's; replayed from the build cache on a hit, else planned, written as a layer and stored.
    private mutating func executeCopy(
        _ copy: CopyInstruction, instruction: Instruction, position: Int?, stage: PlannedStage,
        state: inout StageState
    ) async throws {
        let line = instruction.range.start.line
        var sourceStage: Int?
        if case .stage(let index)? = position.flatMap({ stage.sources[$0] })
            ?? copy.from.flatMap({ stage.triggerSources[$0] })
        {
            sourceStage = index
        }
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
        guard !replay.hit else { return }
        try materialize(&state)
        var entries = planned ?? []
        if planned == nil {
            entries = try await copyEntries(
                expandedCopy: copy, instruction: instruction, position: position, stage: stage, state: state)
        }
        try addLayer(entries, to: &state, line: line, createdBy: instruction.original)
        try storeCachedStep(key, state: state, madeLayer: true, run: nil)
    }

    /// Writes `entries` as one uncompressed layer, refusing one that holds a secret's value, and commits it.
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
            diffID: written.diffID, blobPath: written.blobPath, origin: "made by \(file):\(line)", madeByBuild: true,
            hashedThisBuild: true)
        try commitLayer(record, to: &state, line: line, createdBy: createdBy)
    }

    /// What a COPY/ADD writes: from the context, a stage, an image or a directory; remote sources are
    /// fetched and checked against `--checksum` first.
    /// With `keyRoot` (an empty directory), the entries it would add there, without `--chown` lookups:
    /// what its sources are, for its cache key.
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
