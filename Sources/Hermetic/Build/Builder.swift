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

    public init(options: BuildOptions, log: BuildLog) {
        self.options = options
        self.log = log
    }

    public func build() async throws -> BuildResult {
        let contextRoot = FileSystem.absolute(options.contextDirectory)
        guard FileSystem.isDirectory(contextRoot) else {
            throw ArgumentError(argument: "CONTEXT", value: options.contextDirectory, reason: "not a directory")
        }
        let dockerfilePath = options.dockerfilePath.map(FileSystem.absolute) ?? contextRoot + "/Dockerfile"
        let dockerfile = try Self.loadDockerfile(at: dockerfilePath, displayName: options.dockerfilePath ?? "Dockerfile")
        let platforms = try options.platforms.isEmpty
            ? [Platform.host]
            : options.platforms.map { text in
                do { return try Platform(parsing: text) } catch {
                    throw ArgumentError(argument: "--platform", value: text, reason: "\(error)")
                }
            }
        let ignore = try DockerIgnore.load(contextRoot: contextRoot, dockerfilePath: dockerfilePath)
        let context = BuildContext(root: contextRoot, ignore: ignore, isBuildContext: true)
        let resolver = try makeResolver(contextRoot: contextRoot)
        var buildArguments: [String: String] = [:]
        for argument in options.buildArgs { buildArguments[argument.name] = argument.value }

        let workspaceParent = ProcessEnvironment.current()["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        let workspace = try FileSystem.makeTemporaryDirectory(in: workspaceParent, prefix: "hermetic-build-")
        defer { FileSystem.removeTree(workspace) }

        let environment = ProcessEnvironment.current()
        let runOptions = RunOptions(secrets: options.secrets, sshSockets: options.sshSockets,
            entitlements: options.entitlements, stepTimeoutSeconds: options.stepTimeoutSeconds,
            stateDirectory: options.stateDirectory ?? environment["HERMETIC_STATE_DIR"] ?? "/var/lib/hermetic",
            showOutput: options.progress != .quiet, environment: environment)
        var images: [BuiltImage] = []
        for (number, platform) in platforms.enumerated() {
            let planner = Planner(dockerfile: dockerfile, buildArguments: buildArguments,
                predefinedArguments: PredefinedArguments.values(target: platform, build: .host))
            let plan = try planner.plan(target: options.target)
            if number == 0, !plan.unusedBuildArguments.isEmpty {
                log.warning("build args not consumed by any ARG: \(plan.unusedBuildArguments.joined(separator: ", "))")
            }
            let platformWorkspace = workspace + "/p\(number)"
            try FileSystem.makeDirectory(platformWorkspace)
            var executor = StageExecutor(plan: plan, platform: platform, context: context, resolver: resolver,
                workspace: platformWorkspace, sourceDateEpoch: options.sourceDateEpoch,
                buildArguments: buildArguments, log: log, runOptions: runOptions)
            images.append(try await executor.buildTarget())
        }

        let exporter = ImageExporter(images: images, tags: options.tags, sourceDateEpoch: options.sourceDateEpoch)
        let exported = try exporter.assemble(stagingParent: workspace)
        for output in options.outputs {
            try exporter.write(exported, to: output, workspace: workspace)
        }
        if let iidFile = options.iidFile {
            try FileSystem.writeAtomically(Array(exported.imageDigest.description.utf8), to: iidFile)
        }
        if let metadataFile = options.metadataFile {
            try FileSystem.writeAtomically(try exported.metadataJSON(), to: metadataFile)
        }
        return BuildResult(imageDigest: exported.imageDigest, configDigest: exported.configDigest, platforms: platforms)
    }

    static func loadDockerfile(at path: String, displayName: String) throws -> Dockerfile {
        let bytes: [UInt8]
        do {
            bytes = try FileSystem.readFile(path, limit: DockerfileLimits.maximumFileSize)
        } catch let error as SystemError {
            throw ArgumentError(argument: "-f", value: displayName, reason: "cannot read the Dockerfile: \(error)")
        }
        return try DockerfileParser.parse(bytes, file: displayName)
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
