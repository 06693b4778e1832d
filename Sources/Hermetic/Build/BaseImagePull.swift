/// Before any step runs: every registry image the planned stages use (`FROM`, `COPY --from`, `RUN --mount
/// from=`, ONBUILD triggers' sources) is resolved to its pin, pulled once for all the platforms that ask for
/// it into the store, and given a layout directory in the workspace; the resolver then hands that layout
/// to the stage executor like any named context's.
struct BaseImagePull {
    var plans: [BuildPlan]
    var platforms: [Platform]
    var resolver: ImageResolver
    var transport: RegistryTransportPolicy
    var environment: [String: String]

    /// One image to pull: its pin, the platforms wanted and the first line that asked for it.
    private struct Wanted {
        var pinned: ImageResolver.PinnedImage
        var registry: RegistryReference
        var platforms: [Platform]
        var line: Int
    }

    /// Pulls what is needed; returns the resolver that finds the pulled layouts.
    func run(store: ContentStore, workspace: String) async throws -> ImageResolver {
        let wanted = try collect()
        guard !wanted.isEmpty else { return resolver }
        let file = plans.first?.file ?? "Dockerfile"
        let credentials: DockerCredentialStore
        do {
            credentials = try DockerCredentialStore(environment: environment)
        } catch let error as DockerCredentialStore.ConfigError {
            throw DockerfileError(file: file, line: wanted[0].line, message: "registry credentials: \(error)")
        }
        let timeout = environment["HERMETIC_REGISTRY_TIMEOUT"].flatMap { Int64($0) }.flatMap { $0 > 0 ? $0 : nil }
        let client = try RegistryClient(policy: transport, credentials: credentials, readTimeoutSeconds: timeout ?? 60)
        let puller = RegistryPuller(client: client, store: store)
        var result = resolver
        do {
            for (number, image) in wanted.enumerated() {
                let pulled: RegistryPuller.Pulled
                do {
                    pulled = try await puller.pull(image.registry, platforms: image.platforms)
                } catch let error as RegistryError {
                    throw DockerfileError(
                        file: file, line: image.line, message: "image \"\(image.pinned.reference)\": \(error)")
                }
                let layout = workspace + "/registry-\(number)"
                try puller.writeLayout(at: layout, top: pulled.top)
                if let key = image.pinned.pullKey { result.pulledLayouts[key] = layout }
            }
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
        return result
    }

    /// The registry images of every planned stage, each once, with every platform it is wanted for.
    private func collect() throws -> [Wanted] {
        var wanted: [Wanted] = []
        func want(_ reference: String, platform: Platform, line: Int) {
            // Only registry images are pulled here; every other resolution error is the executor's to
            // report, at the step that meets it, as for a layout.
            guard let pinned = try? resolver.resolve(reference), let registry = pinned.registry else { return }
            if let known = wanted.firstIndex(where: { $0.pinned.pullKey == pinned.pullKey }) {
                if !wanted[known].platforms.contains(platform) { wanted[known].platforms.append(platform) }
            } else {
                wanted.append(Wanted(pinned: pinned, registry: registry, platforms: [platform], line: line))
            }
        }
        for (plan, platform) in zip(plans, platforms) {
            for index in plan.buildOrder {
                let stage = plan.stages[index]
                if case .image(let reference) = stage.base {
                    let stagePlatform = try StagePlatforms.fromPlatform(of: stage, file: plan.file) ?? platform
                    want(reference, platform: stagePlatform, line: stage.from.range.start.line)
                }
                for (reference, line) in Self.otherImageSources(of: stage) {
                    want(reference, platform: platform, line: line)
                }
            }
        }
        return wanted
    }

    /// The images a stage reads besides its base (`COPY --from`, `RUN --mount from=`, ONBUILD triggers'
    /// sources), each with the line of the instruction that names it (the `FROM` line for a trigger's).
    private static func otherImageSources(of stage: PlannedStage) -> [(reference: String, line: Int)] {
        let fromLine = stage.from.range.start.line
        func line(at position: Int) -> Int {
            stage.instructions.indices.contains(position) ? stage.instructions[position].range.start.line : fromLine
        }
        var found: [(reference: String, line: Int)] = []
        for (position, source) in stage.sources.sorted(by: { $0.key < $1.key }) {
            if case .image(let reference) = source { found.append((reference, line(at: position))) }
        }
        for (key, source) in stage.mountSources.sorted(by: { $0.key < $1.key }) {
            let position = key.split(separator: ":").first.flatMap { Int($0) } ?? -1
            if case .image(let reference) = source { found.append((reference, line(at: position))) }
        }
        for (_, source) in stage.triggerSources.sorted(by: { $0.key < $1.key }) {
            if case .image(let reference) = source { found.append((reference, fromLine)) }
        }
        return found
    }
}
