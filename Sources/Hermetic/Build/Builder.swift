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
        var inputs = try readInputs()
        let plans = try plan(inputs)

        WorkspaceJanitor.removeStale(under: inputs.workspaceParent)
        let locked = try signals.creating(
            {
                try WorkspaceJanitor.createWorkspace(
                    in: inputs.workspaceParent, pause: inputs.environment["HERMETIC_TEST_WORKSPACE_PAUSE"])
            }, path: \.path)
        let workspace = locked.path
        defer {
            // Unmounts the stage roots mounted in it first (StageRoots.swift).
            WorkspaceJanitor.remove(workspace)
            signals.forget(workspace)
            close(locked.lock)
        }
        let store = try ContentStore(stateDirectory: inputs.stateDirectory)
        // Shared for the whole build: `hermetic prune` waits rather than remove what this build uses.
        let storeLock = try store.lockForBuild()
        defer { withExtendedLifetime(storeLock) {} }
        let remembered = ContextFileDigests(store: store, root: inputs.contextRoot, trusted: !options.noCache)
        defer { remembered.save() }
        inputs.context.rememberedDigests = remembered
        inputs.contextDigest = SharedContextDigest(inputs.context)
        inputs.resolver = try await BaseImagePull(
            plans: plans, platforms: inputs.platforms, resolver: inputs.resolver, transport: options.registryTransport,
            environment: inputs.environment
        ).run(store: store, workspace: workspace)
        // `--cache-from`: before any step looks in the store (SPEC §10, "Cache export and import").
        let registryCache = RegistryCache(
            transport: options.registryTransport, environment: inputs.environment, log: log)
        for source in options.cacheFrom {
            switch source.location {
            case .directory(let path):
                CacheLayoutReader(store: store, warn: { log.warning($0) }).importCache(from: path)
            case .registry(let reference):
                await registryCache.importCache(source, reference: reference, into: store)
            }
        }

        var (images, record) = try await execute(plans, inputs, workspace: workspace, store: store)
        if options.requireHermetic {
            let failures = BuildChecks.hermeticityFailures(record, file: inputs.dockerfile.file)
            guard failures.isEmpty else { throw HermeticityError(failures: failures) }
        }
        var exporter = try ImageExporter(
            images: images, tags: options.tags, sourceDateEpoch: options.sourceDateEpoch
        ).compressingMadeLayers(options.compression, workers: options.jobs, into: workspace, store: store)
        if options.forceCompression {
            (exporter, record.baseLayersRecompressed) = try exporter.recompressingBaseLayers(
                options.compression, workers: options.jobs, into: workspace, store: store)
        }
        record.layers = exporter.describingExported(record.layers)
        let exported = try exporter.assemble(stagingParent: workspace)
        let (attested, envelopes) = try attest(exported, exporter: exporter, record: record, inputs)
        try await RegistryPush(
            targets: options.pushTargets, transport: options.registryTransport, environment: inputs.environment,
            store: store
        ).run(attested, exporter: exporter)
        let cacheSteps = CacheExportSteps(store: store, min: images.flatMap(\.stepKeys), max: record.stepKeys)
        try await registryCache.export(options.cacheTo, steps: cacheSteps)
        try writeOutputs(
            attested, exporter: exporter, envelopes: envelopes, environment: inputs.environment, cache: cacheSteps)
        return BuildResult(
            imageDigest: attested.imageDigest, configDigest: attested.configDigest, platforms: inputs.platforms)
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
