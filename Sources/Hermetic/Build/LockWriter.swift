import Provenance

/// `hermetic lock`: finds every image the Dockerfile's needed stages use (FROM and `COPY --from`), for
/// every requested platform, and pins each to the digest its named context holds now.
public struct LockWriter {
    public var options: BuildOptions

    public init(options: BuildOptions) {
        self.options = options
    }

    public struct Written: Sendable {
        public var path: String
        public var pinned: [String: Digest]
    }

    public func writeLockFile() throws -> Written {
        let contextRoot = FileSystem.absolute(options.contextDirectory)
        let dockerfilePath =
            options.dockerfilePath.map(FileSystem.absolute) ?? Builder.defaultDockerfile(in: contextRoot)
        let dockerfile = try Builder.loadDockerfile(
            at: dockerfilePath, displayName: options.dockerfilePath ?? "Dockerfile")
        let path = options.lockFile ?? contextRoot + "/hermetic.lock"
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
        let resolver = ImageResolver(namedContexts: options.namedContexts, lockFile: nil, lockFilePath: nil)
        var pinned: [String: Digest] = [:]
        for platform in platforms {
            let plan = try Planner(
                dockerfile: dockerfile, buildArguments: buildArguments,
                predefinedArguments: PredefinedArguments.values(target: platform, build: .host)
            ).plan(target: options.target)
            var references: [String] = []
            for index in plan.buildOrder {
                let stage = plan.stages[index]
                if case .image(let reference) = stage.base { references.append(reference) }
                for source in stage.sources.values {
                    if case .image(let reference) = source, case .ociLayout? = options.namedContexts[reference] {
                        references.append(reference)
                    }
                }
            }
            for reference in references where pinned[reference] == nil {
                let image = try resolver.resolve(reference, requirement: .unpinnedAllowed)
                if let digest = image.digest {
                    pinned[reference] = digest
                } else if let registry = image.registry {
                    throw ResolutionError(
                        reference: reference,
                        reason:
                            "hermetic lock does not resolve tags through a registry yet; pin it as \(registry.name)@sha256:…"
                    )
                } else {
                    let reader = try OCILayoutReader(path: image.layoutPath)
                    pinned[reference] = try reader.topLevelDescriptor(tag: image.tag).digest
                }
            }
        }
        try FileSystem.writeAtomically(try CanonicalJSON.encode(LockFile(images: pinned)), to: path)
        return Written(path: path, pinned: pinned)
    }
}
