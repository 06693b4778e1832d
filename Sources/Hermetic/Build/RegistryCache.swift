/// `--cache-from type=registry` (read before any step runs) and `--cache-to type=registry` (pushed after the
/// image is pushed and before the local outputs are put in place), each through its own client, with the
/// build's credentials and transport policy.
struct RegistryCache {
    var transport: RegistryTransportPolicy
    var environment: [String: String]
    var log: BuildLog

    /// A cache export that failed: the build's error, or with `ignore-error=true` a warning.
    struct ExportError: HermeticError {
        var name: String
        var underlying: any Error
        var description: String { "--cache-to \(name): \(underlying)" }
    }

    /// Imports `spec`'s cache into the store; whatever fails is a warning (as BuildKit: the build runs cold).
    func importCache(_ spec: CacheImportSpec, reference: RegistryReference, into store: ContentStore) async {
        let client: RegistryClient
        do {
            client = try makeClient(for: reference)
        } catch {
            log.warning("--cache-from \(spec.name): \(error); no cache imported")
            return
        }
        await CacheRegistryReader(store: store, client: client, warn: { log.warning($0) })
            .importCache(from: reference, name: spec.name)
        await client.shutdown()
    }

    /// Pushes the cache of each `type=registry` spec; a failure stops the build unless `ignore-error=true`.
    func export(_ specs: [CacheExportSpec], steps: CacheExportSteps) async throws {
        for spec in specs {
            guard case .registry(let reference) = spec.location else { continue }
            do {
                let cache = try CacheManifest(keys: spec.mode == .max ? steps.max : steps.min, store: steps.store)
                let client = try makeClient(for: reference)
                let pushed: CacheRegistryWriter.Pushed
                do {
                    pushed = try await CacheRegistryWriter(store: steps.store, client: client).push(
                        cache, to: reference)
                } catch {
                    await client.shutdown()
                    throw error
                }
                await client.shutdown()
                log.note(
                    "--cache-to \(spec.name): \(cache.steps) cached steps, \(cache.layers.count) layers; "
                        + "\(pushed.uploaded) of \(pushed.blobs) blobs uploaded, \(pushed.blobs - pushed.uploaded) "
                        + "already there")
            } catch {
                let failure: any HermeticError =
                    (error as? CacheBlobError).map {
                        CacheLayoutWriter.DamagedStoreError(destination: spec.name, blob: $0)
                    }
                    ?? ExportError(name: spec.name, underlying: error)
                guard spec.ignoreError else { throw failure }
                log.warning("\(failure) (ignored: ignore-error=true)")
            }
        }
    }

    private func makeClient(for reference: RegistryReference) throws -> RegistryClient {
        try RegistryAccess(transport: transport, environment: environment).makeClient(registry: reference.registry)
    }
}
