import Provenance

/// `hermetic lock`: finds every image the Dockerfile's needed stages use (FROM and `COPY --from`), for
/// every requested platform, and pins each: to the digest its named context holds now, or, for a registry
/// image, to the digest its tag names now (kept from the lock file unless `--update` moves it).
public struct LockWriter {
    public var options: BuildOptions
    /// `--update`: registry pins move to what their tags name now; `updateNames`, when given, only those.
    public var update = false
    public var updateNames: [String] = []

    public init(options: BuildOptions) {
        self.options = options
    }

    public struct Written: Sendable {
        public var path: String
        public var pinned: [String: Digest]
    }

    public func writeLockFile() async throws -> Written {
        let contextRoot = FileSystem.absolute(options.contextDirectory)
        let dockerfilePath =
            options.dockerfilePath.map(FileSystem.absolute) ?? Builder.defaultDockerfile(in: contextRoot)
        let dockerfile = try Builder.loadDockerfile(
            at: dockerfilePath, displayName: options.dockerfilePath ?? "Dockerfile")
        let path = options.lockFile ?? contextRoot + "/hermetic.lock"
        let existing = FileSystem.exists(path) ? try LockFile.load(from: path) : nil
        let wanted = try imagesUsed(dockerfile)
        for name in updateNames where !wanted.contains(where: { $0.reference == name }) {
            throw ArgumentError(
                argument: "--update", value: name, reason: "the Dockerfile's stages use no image so named")
        }
        let resolver = ImageResolver(namedContexts: options.namedContexts, lockFile: nil, lockFilePath: nil)
        var client: RegistryClient?
        var pinned: [String: Digest] = [:]
        do {
            for (reference, platforms) in wanted {
                let image = try resolver.resolve(reference, requirement: .unpinnedAllowed)
                if let digest = image.digest {
                    pinned[reference] = digest
                } else if let registry = image.registry {
                    let moving = update && (updateNames.isEmpty || updateNames.contains(reference))
                    if !moving, let kept = existing?.images[reference] {
                        pinned[reference] = kept
                        continue
                    }
                    let active = try client ?? makeClient()
                    client = active
                    do {
                        pinned[reference] = try await RegistryTagResolver(client: active).resolve(
                            registry, platforms: platforms)
                    } catch let error as RegistryError {
                        throw ResolutionError(reference: reference, reason: error.description)
                    }
                } else {
                    let reader = try OCILayoutReader(path: image.layoutPath)
                    pinned[reference] = try reader.topLevelDescriptor(tag: image.tag).digest
                }
            }
        } catch {
            await client?.shutdown()
            throw error
        }
        await client?.shutdown()
        try FileSystem.writeAtomically(try CanonicalJSON.encode(LockFile(images: pinned)), to: path)
        return Written(path: path, pinned: pinned)
    }

    private func makeClient() throws -> RegistryClient {
        let environment = ProcessEnvironment.current()
        let timeout = environment["HERMETIC_REGISTRY_TIMEOUT"].flatMap { Int64($0) }.flatMap { $0 > 0 ? $0 : nil }
        return try RegistryClient(
            policy: options.registryTransport, credentials: try DockerCredentialStore(environment: environment),
            readTimeoutSeconds: timeout ?? 60)
    }

    /// Each image reference the needed stages use, in first-use order, with the platforms it is used for
    /// (a stage's `FROM --platform`, else the target's).
    private func imagesUsed(_ dockerfile: Dockerfile) throws -> [(reference: String, platforms: [Platform])] {
        var buildArguments: [String: String] = [:]
        for argument in options.buildArgs { buildArguments[argument.name] = argument.value }
        let platforms =
            try options.platforms.isEmpty
            ? [Platform.host]
            : options.platforms.map { text in
                do { return try Platform(parsing: text) } catch {
                    throw ArgumentError(argument: "--platform", value: text, reason: "\(error)")
                }
            }
        var wanted: [(reference: String, platforms: [Platform])] = []
        func want(_ reference: String, _ platform: Platform) {
            if let known = wanted.firstIndex(where: { $0.reference == reference }) {
                if !wanted[known].platforms.contains(platform) { wanted[known].platforms.append(platform) }
            } else {
                wanted.append((reference, [platform]))
            }
        }
        for platform in platforms {
            let plan = try Planner(
                dockerfile: dockerfile, buildArguments: buildArguments,
                predefinedArguments: PredefinedArguments.values(target: platform, build: .host)
            ).plan(target: options.target)
            for index in plan.buildOrder {
                let stage = plan.stages[index]
                if case .image(let reference) = stage.base {
                    want(reference, try StagePlatforms.fromPlatform(of: stage, file: plan.file) ?? platform)
                }
                for source in stage.sources.values {
                    guard case .image(let reference) = source else { continue }
                    if case .directory? = options.namedContexts[reference] { continue }
                    want(reference, platform)
                }
            }
        }
        return wanted
    }
}
