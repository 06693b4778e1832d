// Build/ — the driver: `BuildOptions` in, a `BuildResult` out. It reads the Dockerfile and runs the
// pipeline Frontend → Plan → Execute → Export → Attest, and owns the build's log, workspace and lock file.

import Provenance

#if canImport(Glibc)
    import Glibc
#endif

/// What a finished build reports.
public struct BuildResult: Sendable {
    /// The manifest digest (one platform) or the image index digest (several).
    public var imageDigest: Digest
    public var configDigest: Digest?
    public var platforms: [Platform]
}

/// Runs a whole build: parse, plan (per platform), execute the needed stages, export.
public struct Builder {
    public var options: BuildOptions
    public var log: BuildLog
    /// What a signal must remove is recorded here (see `WorkspaceJanitor.SignalGuard`).
    public var signals: WorkspaceJanitor.SignalGuard

    public init(options: BuildOptions, log: BuildLog, signals: WorkspaceJanitor.SignalGuard = .init()) {
        self.options = options
        self.log = log
        self.signals = signals
    }

    /// Why a build cannot start here at all.
    public struct PrivilegeError: HermeticError {
        public var description: String {
            "hermetic build needs root, or a user namespace in which it is root: in rootless mode the "
                + "relaunched builder still was not uid 0 (run it as root)"
        }
    }

    /// `CONTEXT/Dockerfile`, else `CONTEXT/dockerfile` when only that exists (BuildKit's dockerui does the same).
    static func defaultDockerfile(in contextRoot: String) -> String {
        let upper = contextRoot + "/Dockerfile"
        let lower = contextRoot + "/dockerfile"
        return !FileSystem.exists(upper) && FileSystem.exists(lower) ? lower : upper
    }

    static func runRootMechanism(_ environment: [String: String]) throws(ArgumentError) -> RunRootMechanism {
        guard let text = environment["HERMETIC_RUN_ROOT"], !text.isEmpty else { return .automatic }
        guard let mechanism = RunRootMechanism(rawValue: text) else {
            throw ArgumentError(argument: "HERMETIC_RUN_ROOT", value: text, reason: "must be auto, overlay or copy")
        }
        return mechanism
    }

    public func build() async throws -> BuildResult {
        guard geteuid() == 0 else { throw PrivilegeError() }
        // Nothing of a build may depend on the caller's umask: the directories the builder makes (a stage's
        // root, the sandbox's mountpoints) are what RUN steps see. Under 027 a USER step could not enter /.
        umask(0o022)
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
                + options.namedContexts.values.map { context in
                    switch context {
                    case .ociLayout(let path, _, _): path
                    case .directory(let path): path
                    }
                }
                + options.secrets.values.compactMap { if case .file(let path) = $0 { path } else { nil } }
                + Array(options.sshSockets.values)
        ).check(options)
        let startedOn = RFC3339.format(Int64(time(nil)))
        let dockerfileBytes = try Self.readDockerfile(
            at: dockerfilePath, displayName: options.dockerfilePath ?? FileSystem.baseName(dockerfilePath))
        let dockerfile = try Self.parseDockerfile(
            dockerfileBytes, displayName: options.dockerfilePath ?? FileSystem.baseName(dockerfilePath))
        let signingKey = try options.signKeyPath.map { path in
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
        if options.outputs.isEmpty {
            // As buildx warns with a builder that keeps nothing: without -o, the image is made and dropped.
            log.warning(
                "No output specified: the image is built and its digest printed, but nothing is written. To write "
                    + "it use -o type=oci,dest=DIR (or type=oci,dest=FILE.tar, type=docker,dest=FILE.tar, "
                    + "type=local,dest=DIR)")
        }
        let ignore = try DockerIgnore.load(contextRoot: contextRoot, dockerfilePath: dockerfilePath)
        let context = BuildContext(root: contextRoot, ignore: ignore, isBuildContext: true)
        let resolver = try makeResolver(contextRoot: contextRoot)
        var buildArguments: [String: String] = [:]
        for argument in options.buildArgs { buildArguments[argument.name] = argument.value }

        WorkspaceJanitor.removeStale(under: workspaceParent)
        let locked = try signals.creating(
            {
                try WorkspaceJanitor.createWorkspace(
                    in: workspaceParent, pause: environment["HERMETIC_TEST_WORKSPACE_PAUSE"])
            }, path: \.path)
        let workspace = locked.path
        defer {
            FileSystem.removeTree(workspace)
            signals.forget(workspace)
            close(locked.lock)
        }

        let runOptions = RunOptions(
            secrets: options.secrets, sshSockets: options.sshSockets,
            entitlements: options.entitlements, stepTimeoutSeconds: options.stepTimeoutSeconds,
            stateDirectory: stateDirectory,
            showOutput: options.progress != .quiet, environment: environment,
            rootMechanism: try Self.runRootMechanism(environment),
            failOverlayMount: environment["HERMETIC_TEST_FAIL_OVERLAY"] == "1")
        let store = try ContentStore(stateDirectory: stateDirectory)
        // Shared for the whole build: `hermetic prune` waits rather than remove what this build uses.
        let storeLock = try store.lockForBuild()
        defer { withExtendedLifetime(storeLock) {} }
        let cacheSettings = StepCacheSettings(
            store: store, readNothing: options.noCache, stagesNotRead: Set(options.noCacheFilter))
        var images: [BuiltImage] = []
        var record = BuildRecord()
        // Every platform is planned, and its RUN steps checked against this host, before any step runs;
        // the progress view then knows the total before the first step.
        var plans: [BuildPlan] = []
        for platform in platforms {
            let planner = Planner(
                dockerfile: dockerfile, buildArguments: buildArguments,
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
        var executors: [StageExecutor] = []
        for (number, platform) in platforms.enumerated() {
            let platformWorkspace = workspace + "/p\(number)"
            try FileSystem.makeDirectory(platformWorkspace)
            var executor = StageExecutor(
                plan: plans[number], platform: platform, context: context, resolver: resolver,
                workspace: platformWorkspace, sourceDateEpoch: options.sourceDateEpoch,
                buildArguments: buildArguments, log: log, runOptions: runOptions)
            executor.stepCache = cacheSettings
            executor.progressPlatform = platforms.count > 1 ? platform.description : nil
            executors.append(executor)
        }
        log.expectSteps(executors.reduce(0) { $0 + $1.stepCount })
        for var executor in executors {
            do {
                images.append(try await executor.buildTarget())
            } catch {
                executor.releaseTemporaryMounts()
                throw error
            }
            executor.releaseTemporaryMounts()
            record.merge(executor.record)
        }

        if options.requireHermetic {
            let failures = BuildChecks.hermeticityFailures(record, file: dockerfile.file)
            guard failures.isEmpty else { throw HermeticityError(failures: failures) }
        }
        let exporter = try ImageExporter(
            images: images, tags: options.tags, sourceDateEpoch: options.sourceDateEpoch
        ).compressingMadeLayers(options.compression, workers: options.jobs, into: workspace, store: store)
        record.layers = exporter.describingExported(record.layers)
        var exported = try exporter.assemble(stagingParent: workspace)
        var envelopes: [DSSEEnvelope] = []
        if let mode = options.provenance {
            let source = DockerfileSource(
                given: options.dockerfilePath, resolved: dockerfilePath, contextRoot: contextRoot,
                bytes: dockerfileBytes)
            let provenance = ProvenanceBuilder(
                dockerfile: source, contextDigest: try ContextDigest.compute(context),
                options: options, platforms: platforms, record: record,
                manifests: exported.manifests.map { ($0.platform, $0.descriptor.digest) }, mode: mode)
            let definition = try CanonicalJSON.encode(try provenance.buildDefinition())
            let runRecord = try CanonicalJSON.encode(
                provenance.runRecord(
                    definitionDigest: Digest.sha256(of: definition), invocationID: Self.invocationID(),
                    startedOn: startedOn, finishedOn: RFC3339.format(Int64(time(nil)))))
            // The Dockerfile's bytes are in the definition as base64, where a plain search would miss them.
            try SecretTaint(secrets: options.secrets, environment: environment).check(
                [("the provenance", definition), ("the run record", runRecord)]
                    + (source.content.map { [("the Dockerfile the provenance carries", $0)] } ?? [])
                    + (try images.map { ("the image config", try CanonicalJSON.encode($0.config)) }))
            var definitionEnvelope = DSSEEnvelope(payload: definition, payloadType: InTotoStatement.payloadType)
            var runEnvelope = DSSEEnvelope(payload: runRecord, payloadType: InTotoStatement.payloadType)
            var signedDefinition: [UInt8]?
            if let signingKey {
                try definitionEnvelope.sign(with: signingKey)
                try runEnvelope.sign(with: signingKey)
                signedDefinition = try CanonicalJSON.encode(definitionEnvelope)
            }
            envelopes = [definitionEnvelope, runEnvelope]
            exported = try exporter.attach(
                statement: definition, envelope: signedDefinition, predicateType: SLSAProvenance.predicateType,
                runRecord: signingKey == nil ? runRecord : try CanonicalJSON.encode(runEnvelope), to: exported)
        } else {
            try SecretTaint(secrets: options.secrets, environment: environment).check(
                try images.map { ("the image config", try CanonicalJSON.encode($0.config)) })
        }
        // Every output complete under a temporary name first; then all are put in place.
        let iidFile = options.iidFile.map(FileSystem.absolute)
        let attestFile = options.attestFile.map(FileSystem.absolute)
        let metadataFile = options.metadataFile.map(FileSystem.absolute)
        let pending = try PendingOutputs(
            destinations: options.outputs.map { FileSystem.absolute($0.destination) }
                + [iidFile, attestFile, metadataFile].compactMap { $0 },
            signals: signals, waiting: { log.warning("waiting for another build that is writing \($0)") })
        for output in options.outputs {
            try exporter.prepare(exported, to: output, pending: pending)
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
        return BuildResult(imageDigest: exported.imageDigest, configDigest: exported.configDigest, platforms: platforms)
    }

    static func readDockerfile(at path: String, displayName: String) throws -> [UInt8] {
        do {
            return try FileSystem.readFile(path, limit: DockerfileLimits.maximumFileSize, allowPipe: true)
        } catch let error as SystemError {
            throw ArgumentError(argument: "-f", value: displayName, reason: "cannot read the Dockerfile: \(error)")
        } catch let error as NotRegularFileError {
            throw ArgumentError(argument: "-f", value: displayName, reason: "cannot read the Dockerfile: \(error)")
        }
    }

    static func loadDockerfile(at path: String, displayName: String) throws -> Dockerfile {
        try parseDockerfile(try readDockerfile(at: path, displayName: displayName), displayName: displayName)
    }

    /// BuildKit refuses an empty Dockerfile before parsing it (a file of only comments has no instructions,
    /// which the parser refuses).
    static func parseDockerfile(_ bytes: [UInt8], displayName: String) throws -> Dockerfile {
        guard !bytes.isEmpty else {
            throw DockerfileError(file: displayName, line: 1, message: "the Dockerfile cannot be empty")
        }
        return try DockerfileParser.parse(bytes, file: displayName)
    }

    /// A random version-4 UUID for the run record.
    static func invocationID() -> String {
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255) }
        bytes[6] = (bytes[6] & 0x0f) | 0x40
        bytes[8] = (bytes[8] & 0x3f) | 0x80
        let hex = bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
            .joined()
        let h = Array(hex)
        return String(h[0..<8]) + "-" + String(h[8..<12]) + "-" + String(h[12..<16]) + "-" + String(h[16..<20]) + "-"
            + String(h[20..<32])
    }

    func makeResolver(contextRoot: String) throws -> ImageResolver {
        var lockPath = options.lockFile
        if lockPath == nil, FileSystem.exists(contextRoot + "/hermetic.lock") {
            lockPath = contextRoot + "/hermetic.lock"
        }
        let lock = try lockPath.map { try LockFile.load(from: $0) }
        return ImageResolver(namedContexts: options.namedContexts, lockFile: lock, lockFilePath: lockPath)
    }
}

/// The predefined platform ARGs of the Dockerfile reference.
public enum PredefinedArguments {
    public static func values(target: Platform, build: Platform) -> [String: String] {
        var result: [String: String] = [:]
        for (prefix, platform) in [("TARGET", target), ("BUILD", build)] {
            result[prefix + "PLATFORM"] = platform.description
            result[prefix + "OS"] = platform.os
            result[prefix + "ARCH"] = platform.architecture
            result[prefix + "VARIANT"] = platform.variant ?? ""
        }
        return result
    }
}
