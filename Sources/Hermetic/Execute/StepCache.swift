/// The build cache's side of a RUN, COPY or ADD step (SPEC §10).
///
/// In: the stage's state before the step, the instruction, and digests of what the step reads. Out: the
/// step's `CacheKey`; on a hit, the stored layer applied and the step's provenance records replayed, so
/// nothing runs; after a miss, the step's result stored under its key for later builds.
import Foundation
import Provenance

/// Where a build keeps and finds cached steps, and which stages may not read them.
struct StepCacheSettings: Sendable {
    var store: ContentStore
    /// `--no-cache`: no step reads the cache (every result is still stored).
    var readNothing = false
    /// `--no-cache-filter`: stages (by name, or by index as a string) whose steps do not read the cache.
    var stagesNotRead: Set<String> = []

    func mayRead(stage: PlannedStage) -> Bool {
        if readNothing { return false }
        return stagesNotRead.isDisjoint(
            with: [String(stage.index), stage.displayName] + (stage.name.map { [$0] } ?? []))
    }
}

/// Everything a step's result depends on, as canonical JSON; its sha256 is the key. Never a file's mtime
/// (a context file's layer entry takes SOURCE_DATE_EPOCH), never a secret's value (the instruction names
/// the secret's id and options only), never a cache mount's contents.
private struct StepKeyMaterial: Encodable {
    struct HeredocMaterial: Encodable {
        var name: String
        var content: String
        var expand: Bool
        var chomp: Bool
        var fileDescriptor: Int?
    }
    var format = 1
    /// The key of the step before (or of the stage's start), as BuildKit chains them: a step whose input
    /// changed runs again, and so does every step after it in the stage, even when its layer came out the same.
    var parent: String
    var builder = HermeticVersion.string
    var layerFormat = HermeticVersion.layerFormat
    var platform: String
    var sourceDateEpoch: Int64
    /// The image config before the step: its layers' diff_ids (the filesystem the step starts from),
    /// Env, User, WorkingDir, Shell, and the history so far.
    var config: ImageConfig
    /// The build environment the step sees (ENV and ARGs with values), in order.
    var variables: [String]
    /// The instruction as written (its expansion follows from it and `variables`), and its heredocs.
    var instruction: String
    var heredocs: [HeredocMaterial]
    /// What the step reads beyond the filesystem: `kind:digest` lines.
    var inputs: [String]
}

extension StageExecutor {
    func cacheKey(
        for instruction: Instruction, heredocs: [Heredoc], state: StageState, inputs: [String]
    ) throws -> CacheKey {
        let material = StepKeyMaterial(
            parent: state.cacheKey?.digest.description ?? "none", platform: platform.description,
            sourceDateEpoch: sourceDateEpoch, config: state.config,
            variables: state.scope.variableLines, instruction: instruction.original,
            heredocs: heredocs.map {
                .init(
                    name: $0.name, content: $0.content, expand: $0.expand, chomp: $0.chomp,
                    fileDescriptor: $0.fileDescriptor)
            },
            inputs: inputs)
        return CacheKey(digest: Digest.sha256(of: try CanonicalJSON.encode(material)))
    }

    /// The digest of a COPY/ADD's planned entries: each entry's path, type, mode, owner, mtime, xattrs and
    /// bytes (with the source file's owner on disk, as BuildKit's content hash has it).
    func entriesDigest(_ entries: [LayerEntry]) throws -> String {
        let hasher = SHA256Hasher()
        func add(_ text: String) { hasher.update(Array(text.utf8) + [0]) }
        for entry in entries.sorted(by: { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }) {
            add(entry.path)
            add("\(entry.mode) \(entry.uid) \(entry.gid) \(entry.mtime)")
            for name in entry.xattrs.keys.sorted() {
                add("xattr " + name + " " + Digest.sha256(of: entry.xattrs[name] ?? []).description)
            }
            switch entry.kind {
            case .directory: add("directory")
            case .symlink(let target): add("symlink " + target)
            case .hardlink(let target): add("hardlink " + target)
            case .characterDevice(let major, let minor): add("char \(major) \(minor)")
            case .blockDevice(let major, let minor): add("block \(major) \(minor)")
            case .fifo: add("fifo")
            case .regular(.bytes(let bytes)): add("bytes " + Digest.sha256(of: bytes).description)
            case .regular(.file(let path, let size)):
                // The source's owner too, as BuildKit's content hash has it, though COPY writes 0:0.
                var info = stat()
                let owner = lstat(path, &info) == 0 ? "\(info.st_uid):\(info.st_gid)" : "?"
                add("file \(size) \(owner) " + (try context.fileDigest(path)).description)
            }
        }
        return "entries:" + hasher.finalize().description
    }

    /// What a RUN reads besides its root: the entitlements granted and the ids of the secrets and ssh sockets
    /// given; for each bind mount, its source (the build context's digest, a
    /// stage's config, an image's manifest digest, a directory context's digest). Cache, secret, ssh and
    /// tmpfs mounts read nothing that enters the key (their ids and options are in the instruction).
    mutating func runInputs(_ run: RunInstruction, position: Int?, scope: StageScope, line: Int) throws -> [String] {
        // What the person granted and gave (ids only): a step that needs a grant or a required secret must
        // not pass on a hit where running it would fail.
        var inputs = [
            "entitlements:" + runOptions.entitlements.map(\.rawValue).sorted().joined(separator: ","),
            "secrets-given:" + runOptions.secrets.keys.sorted().joined(separator: ","),
            "ssh-given:" + runOptions.sshSockets.keys.sorted().joined(separator: ","),
        ]
        for (mountIndex, text) in run.mounts.enumerated() {
            let expanded = (try? lexer.processWord(text, lookup: { scope.lookup($0) })) ?? text
            // A mount that does not parse fails the step when it runs; the key need not describe it.
            guard case .bind(_, _, let from, _)? = try? RunMount.parse(expanded) else { continue }
            guard let from else {
                // Hashed once per build, however many steps bind the context.
                inputs.append("context:" + (try contextDigest.value()).description)
                continue
            }
            let key = position.map { "\($0):\(mountIndex)" }
            let planned = plannedMountSource(key)
            switch planned ?? .image(from) {
            case .stage(let index):
                guard let source = stages[index] else { continue }
                inputs.append("stage:" + Digest.sha256(of: try CanonicalJSON.encode(source.config)).description)
            case .image(let reference):
                if case .directory(let directory)? = resolver.namedContexts[reference] {
                    inputs.append("directory:" + (try directoryDigest(directory)).description)
                } else {
                    _ = try imageRoot(reference, line: line)
                    let manifest = record.images.first { $0.reference == reference }?.manifestDigest
                    inputs.append("image:\(reference)@\(manifest?.description ?? "?")")
                }
            case .namedDirectory(let directory):
                inputs.append("directory:" + (try directoryDigest(directory)).description)
            case .scratch:
                inputs.append("scratch")
            }
        }
        return inputs
    }

    private func directoryDigest(_ directory: String) throws -> Digest {
        try ContextDigest.compute(BuildContext(root: FileSystem.absolute(directory), ignore: DockerIgnore()))
    }

    /// A source stage in a COPY's key: its config names every byte of its filesystem (its diff_ids).
    func stageInput(_ source: StageState) throws -> String {
        "stage " + Digest.sha256(of: try CanonicalJSON.encode(source.config)).description
    }

    /// On a hit, puts the cached step's result in place (layer, config, provenance records) and returns
    /// true; returns false on a miss or when this stage may not read the cache.
    mutating func replayCachedStep(
        _ key: CacheKey, stage: PlannedStage, state: inout StageState, line: Int, createdBy: String
    ) throws -> (hit: Bool, madeLayer: Bool) {
        // Hit or miss, the step's record is in the store once it is done: `--cache-to` exports it by key.
        state.stepKeys.append(key)
        record.stepKeys.append(key)
        guard let cache = stepCache, cache.mayRead(stage: stage), let cached = cache.store.step(key) else {
            return (false, false)
        }
        if let run = cached.run {
            record.steps.append(
                RunRecord(
                    line: line, network: run.network, cacheMounts: run.cacheMounts.map { ($0.id, $0.hadData) },
                    secretIDs: run.secretIDs, sshIDs: run.sshIDs,
                    requested: run.requested.map { ($0.kind, $0.id, $0.required) }))
        }
        log.cachedStep()
        guard let layer = cached.layer else { return (true, false) }
        let blobPath = cache.store.blobPath(layer.diffID)
        try refuseSecrets(inStoredLayer: blobPath, line: line)
        let layerRecord = LayerRecord(
            descriptor: Descriptor(mediaType: MediaType.layerTar, digest: layer.diffID, size: layer.size),
            diffID: layer.diffID, blobPath: blobPath, origin: "made by \(file):\(line) (cached)", madeByBuild: true)
        try commitLayer(layerRecord, to: &state, line: line, createdBy: createdBy)
        return (true, true)
    }

    /// After a miss: the step's layer (the last one `state` gained, when `madeLayer`) and its records.
    func storeCachedStep(
        _ key: CacheKey, state: StageState, madeLayer: Bool, run: RunRecord?
    ) throws {
        guard let cache = stepCache else { return }
        var cached = CachedStep()
        if madeLayer, let layer = state.layers.last {
            cached.layer = .init(diffID: layer.diffID, size: layer.descriptor.size)
        }
        if let run {
            cached.run = .init(
                network: run.network, cacheMounts: run.cacheMounts.map { .init(id: $0.id, hadData: $0.hadData) },
                secretIDs: run.secretIDs, sshIDs: run.sshIDs,
                requested: run.requested.map { .init(kind: $0.kind, id: $0.id, required: $0.required) })
        }
        try cache.store.storeStep(cached, for: key)
    }

    /// A cached layer was scanned for the secrets of the build that made it; this build's values may differ.
    private func refuseSecrets(inStoredLayer path: String, line: Int) throws {
        guard !secretValues.isEmpty else { return }
        let scanner = SecretStreamScanner(secretValues)
        try FileSystem.readChunks(path) { scanner.consume($0) }
        if let id = scanner.found {
            throw DockerfileError(
                file: file, line: line,
                message: "the value of secret \(id) would be written into this step's layer; refusing to write it")
        }
    }
}
