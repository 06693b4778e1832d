import Provenance

#if canImport(Glibc)
    import Glibc
#endif

/// What a build reads before anything runs: checked flags and paths, the parsed Dockerfile, the context,
/// the resolver of named contexts and pins, and the platforms.
struct BuildInputs {
    var contextRoot: String
    var dockerfilePath: String
    var dockerfileBytes: [UInt8]
    var dockerfile: Dockerfile
    var environment: [String: String]
    var workspaceParent: String
    var stateDirectory: String
    var signingKey: SigningKey?
    var platforms: [Platform]
    var context: BuildContext
    /// Hashed once, for RUN binds' cache keys and the provenance.
    var contextDigest: SharedContextDigest
    var resolver: ImageResolver
    var buildArguments: [String: String]
    var startedOn: String
}

/// The steps of `Builder.build`, in the order it takes them.
extension Builder {
    /// Reads and checks every input; nothing runs and nothing is written yet.
    func readInputs() throws -> BuildInputs {
        let contextRoot = FileSystem.absolute(options.contextDirectory)
        guard FileSystem.isDirectory(contextRoot) else {
            throw ArgumentError(argument: "CONTEXT", value: options.contextDirectory, reason: "not a directory")
        }
        // `-f -`: the Dockerfile comes on standard input (as docker build takes it).
        let dockerfilePath =
            options.dockerfilePath == "-"
            ? "/dev/stdin" : options.dockerfilePath.map(FileSystem.absolute) ?? Self.defaultDockerfile(in: contextRoot)
        let environment = ProcessEnvironment.current()
        let workspaceParent = WorkspaceJanitor.workspaceParent(environment)
        // Absolute before any step runs, as TMPDIR is: a relative one means the current directory's.
        let stateDirectory = FileSystem.absolute(
            options.stateDirectory ?? environment["HERMETIC_STATE_DIR"]
                ?? RootlessMode.defaultStateDirectory(environment: environment))
        try OutputDestinationCheck(
            inputs: [contextRoot, dockerfilePath, workspaceParent, stateDirectory]
                + (options.lockFile.map { [$0] } ?? []) + (options.signKeyPath.map { [$0] } ?? [])
                + options.namedContexts.values.compactMap { context in
                    switch context {
                    case .ociLayout(let path, _, _): path
                    case .directory(let path): path
                    case .dockerImage: nil
                    }
                }
                + options.secrets.values.compactMap { if case .file(let path) = $0 { path } else { nil } }
                + Array(options.sshSockets.values)
        ).check(options)
        let startedOn = RFC3339.format(Int64(time(nil)))
        let displayName = options.dockerfilePath ?? FileSystem.baseName(dockerfilePath)
        let dockerfileBytes = try Self.readDockerfile(at: dockerfilePath, displayName: displayName)
        let dockerfile = try Self.parseDockerfile(dockerfileBytes, displayName: displayName)
        let signingKey = try readSigningKey()
        let platforms =
            try options.platforms.isEmpty
            ? [Platform.host]
            : options.platforms.map { text in
                do { return try Platform(parsing: text) } catch {
                    throw ArgumentError(argument: "--platform", value: text, reason: "\(error)")
                }
            }
        for warning in BuildChecks.warnings(dockerfile: dockerfile, buildArgs: options.buildArgs) {
            log.warning(warning)
        }
        if options.outputs.isEmpty && options.pushTargets.isEmpty {
            // As buildx warns with a builder that keeps nothing: without -o, the image is made and dropped.
            log.warning(
                "No output specified: the image is built and its digest printed, but nothing is written. To write "
                    + "it use -o type=oci,dest=DIR (or type=oci,dest=FILE.tar, type=docker,dest=FILE.tar, "
                    + "type=local,dest=DIR)")
        }
        let ignore = try DockerIgnore.load(contextRoot: contextRoot, dockerfilePath: dockerfilePath)
        let context = BuildContext(root: contextRoot, ignore: ignore, isBuildContext: true)
        var buildArguments: [String: String] = [:]
        for argument in options.buildArgs { buildArguments[argument.name] = argument.value }
        return BuildInputs(
            contextRoot: contextRoot, dockerfilePath: dockerfilePath, dockerfileBytes: dockerfileBytes,
            dockerfile: dockerfile, environment: environment, workspaceParent: workspaceParent,
            stateDirectory: stateDirectory, signingKey: signingKey, platforms: platforms,
            context: context, contextDigest: SharedContextDigest(context),
            resolver: try makeResolver(contextRoot: contextRoot), buildArguments: buildArguments,
            startedOn: startedOn)
    }

    private func readSigningKey() throws -> SigningKey? {
        try options.signKeyPath.map { path in
            do {
                return try SigningKey(pem: try FileSystem.readFile(path, limit: 1 << 20, allowPipe: true), source: path)
            } catch let error as SystemError {
                throw ArgumentError(argument: "--sign-key", value: path, reason: error.description)
            } catch let error as NotRegularFileError {
                throw ArgumentError(argument: "--sign-key", value: path, reason: error.description)
            } catch let error as KeyError {
                throw ArgumentError(argument: "--sign-key", value: path, reason: error.reason)
            }
        }
    }

    /// Every platform is planned, and its RUN steps checked against this host, before any step runs; the
    /// progress view then knows the total before the first step.
    func plan(_ inputs: BuildInputs) throws -> [BuildPlan] {
        var plans: [BuildPlan] = []
        for platform in inputs.platforms {
            let planner = Planner(
                dockerfile: inputs.dockerfile, buildArguments: inputs.buildArguments,
                predefinedArguments: PredefinedArguments.values(target: platform, build: .host))
            let plan = try planner.plan(target: options.target)
            let stagePlatforms = try StagePlatforms(plan: plan, target: platform)
            try stagePlatforms.checkRunSteps(in: plan)
            try stagePlatforms.checkTargetStage(of: plan, target: platform, requested: !options.platforms.isEmpty)
            plans.append(plan)
        }
        if let unused = plans.first?.unusedBuildArguments, !unused.isEmpty {
            log.warning("build args not consumed by any ARG: \(unused.joined(separator: ", "))")
        }
        return plans
    }

    /// Runs each platform's plan in `workspace`, steps looked up in and stored to `store`: the needed stages
    /// of all platforms, at most `--jobs` at once.
    func execute(_ plans: [BuildPlan], _ inputs: BuildInputs, workspace: String, store: ContentStore) async throws
        -> ([BuiltImage], BuildRecord)
    {
        let runOptions = RunOptions(
            secrets: options.secrets, sshSockets: options.sshSockets,
            entitlements: options.entitlements, stepTimeoutSeconds: options.stepTimeoutSeconds,
            stateDirectory: inputs.stateDirectory,
            showOutput: options.progress != .quiet, environment: inputs.environment,
            rootMechanism: try Self.runRootMechanism(inputs.environment),
            failOverlayMount: inputs.environment["HERMETIC_TEST_FAIL_OVERLAY"] == "1")
        let cacheSettings = StepCacheSettings(
            store: store, readNothing: options.noCache, stagesNotRead: Set(options.noCacheFilter))
        var executors: [StageExecutor] = []
        for (number, platform) in inputs.platforms.enumerated() {
            let platformWorkspace = workspace + "/p\(number)"
            try FileSystem.makeDirectory(platformWorkspace)
            var executor = StageExecutor(
                plan: plans[number], platform: platform, context: inputs.context, resolver: inputs.resolver,
                workspace: platformWorkspace, sourceDateEpoch: options.sourceDateEpoch,
                buildArguments: inputs.buildArguments, log: log, runOptions: runOptions,
                contextDigest: inputs.contextDigest)
            executor.stepCache = cacheSettings
            executor.snapshots = try StageExecutor.snapshotStore(
                for: store, workspace: platformWorkspace, environment: inputs.environment)
            executor.progressPlatform = inputs.platforms.count > 1 ? platform.description : nil
            executors.append(executor)
        }
        log.expectSteps(executors.reduce(0) { $0 + $1.stepCount })
        // Stages that do not depend on each other, and the platforms, run at the same time (SPEC §2, --jobs).
        var scheduler = StageScheduler(executors: executors, jobs: options.jobs)
        return try await scheduler.run()
    }

    /// The provenance (unless `--provenance false`), signed when a key is given, attached to the image; and
    /// the check that no secret's value reached the provenance or a config.
    func attest(_ exported: ExportedImage, exporter: ImageExporter, record: BuildRecord, _ inputs: BuildInputs)
        throws -> (ExportedImage, [DSSEEnvelope])
    {
        let taint = SecretTaint(secrets: options.secrets, environment: inputs.environment)
        let configs = try exporter.images.map { ("the image config", try CanonicalJSON.encode($0.config)) }
        guard let mode = options.provenance else {
            try taint.check(configs)
            return (exported, [])
        }
        let source = DockerfileSource(
            given: options.dockerfilePath, resolved: inputs.dockerfilePath, contextRoot: inputs.contextRoot,
            bytes: inputs.dockerfileBytes)
        let provenance = ProvenanceBuilder(
            dockerfile: source, contextDigest: try inputs.contextDigest.value(),
            options: options, platforms: inputs.platforms, record: record,
            manifests: exported.manifests.map { ($0.platform, $0.descriptor.digest) }, mode: mode)
        let definition = try CanonicalJSON.encode(try provenance.buildDefinition())
        let runRecord = try CanonicalJSON.encode(
            provenance.runRecord(
                definitionDigest: Digest.sha256(of: definition), invocationID: Self.invocationID(),
                startedOn: inputs.startedOn, finishedOn: RFC3339.format(Int64(time(nil)))))
        // The Dockerfile's bytes are in the definition as base64, where a plain search would miss them.
        try taint.check(
            [("the provenance", definition), ("the run record", runRecord)]
                + (source.content.map { [("the Dockerfile the provenance carries", $0)] } ?? []) + configs)
        var definitionEnvelope = DSSEEnvelope(payload: definition, payloadType: InTotoStatement.payloadType)
        var runEnvelope = DSSEEnvelope(payload: runRecord, payloadType: InTotoStatement.payloadType)
        var signed = false
        if let signingKey = inputs.signingKey {
            try definitionEnvelope.sign(with: signingKey)
            try runEnvelope.sign(with: signingKey)
            signed = true
        }
        let attested = try exporter.attach(
            definition: .init(
                statement: definition, envelope: signed ? try CanonicalJSON.encode(definitionEnvelope) : nil,
                predicateType: SLSAProvenance.predicateType),
            runRecord: .init(
                statement: runRecord, envelope: signed ? try CanonicalJSON.encode(runEnvelope) : nil,
                predicateType: ProvenanceBuilder.runRecordType),
            format: options.attestFormat, to: exported)
        return (attested, [definitionEnvelope, runEnvelope])
    }

    /// Every output complete under a temporary name first; then all are put in place at one commit point.
    func writeOutputs(
        _ exported: ExportedImage, exporter: ImageExporter, envelopes: [DSSEEnvelope], environment: [String: String],
        cache: CacheExportSteps
    ) throws {
        let iidFile = options.iidFile.map(FileSystem.absolute)
        let attestFile = options.attestFile.map(FileSystem.absolute)
        let metadataFile = options.metadataFile.map(FileSystem.absolute)
        let pending = try PendingOutputs(
            destinations: options.outputs.map { FileSystem.absolute($0.destination) }
                + options.cacheTo.compactMap { $0.destination.map(FileSystem.absolute) }
                + [iidFile, attestFile, metadataFile].compactMap { $0 },
            signals: signals, waiting: { log.warning("waiting for another build that is writing \($0)") })
        for output in options.outputs {
            try exporter.prepare(exported, to: output, pending: pending)
        }
        for spec in options.cacheTo {
            guard let directory = spec.destination else { continue }
            let destination = FileSystem.absolute(directory)
            let layout = try FileSystem.makeTemporaryDirectory(
                in: pending.stagingDirectory(for: destination), prefix: "cache-")
            chmod(layout, 0o755)
            _ = try CacheLayoutWriter(store: cache.store).write(
                keys: spec.mode == .max ? cache.max : cache.min, into: layout, destination: directory)
            pending.addDirectory(layout, destination: destination)
        }
        if let iidFile {
            try pending.addFile(Array(exported.imageDigest.description.utf8), destination: iidFile)
        }
        if let attestFile {
            var lines: [UInt8] = []
            for envelope in envelopes { lines += try CanonicalJSON.encode(envelope) + [0x0a] }
            try pending.addFile(lines, destination: attestFile)
        }
        if let metadataFile {
            try pending.addFile(try exported.metadataJSON(), destination: metadataFile)
        }
        try pending.commit(
            pauses: .init(
                before: environment["HERMETIC_TEST_PAUSE_BEFORE_COMMIT"],
                after: environment["HERMETIC_TEST_PAUSE_AFTER_COMMIT"]))
    }
}

/// What `--cache-to` exports: the cache keys of the final image's steps (`mode=min`) or of every stage's
/// (`mode=max`), whose records and layer tars are in `store`.
struct CacheExportSteps {
    var store: ContentStore
    var min: [CacheKey]
    var max: [CacheKey]
}
