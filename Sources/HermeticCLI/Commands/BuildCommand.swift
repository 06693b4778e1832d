import ArgumentParser
import Hermetic

#if canImport(Glibc)
    import Glibc
#endif

struct BuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build", abstract: "Build an image from a Dockerfile and a context directory.")

    @Argument(help: "The build context directory.") var context: String
    @Option(name: [.customShort("f"), .long], help: "The Dockerfile (default: CONTEXT/Dockerfile).") var file: String?
    @Option(name: [.customShort("t"), .long], help: "Name and tag of the image (repeatable).") var tag: [String] = []
    @Option(name: .customLong("build-arg"), help: "A build arg, NAME=VALUE or NAME (repeatable).") var buildArg:
        [String] = []
    @Option(help: "The stage to build.") var target: String?
    @Option(help: "Target platforms, comma-separated (default: the host's).") var platform: [String] = []
    @Option(
        name: [.customShort("o"), .long],
        help:
            "type=oci|docker|local,dest=PATH; oci and docker also take compression=, compression-level= and force-compression=; type=image,name=REG/REPO:TAG,push=true or type=registry,name=… pushes (repeatable)."
    ) var output: [String] = []
    @Flag(help: "Push the image to each -t name (shorthand for -o type=registry).") var push = false
    @Option(
        name: .customLong("cache-to"),
        help:
            "Export the build cache: type=local,dest=DIR or type=registry,ref=REG/REPO:TAG (or just REG/REPO:TAG), with mode=min|max (min, the default: the final image's steps; max: every stage's); type=registry also takes ignore-error=true (repeatable)."
    )
    var cacheTo: [String] = []
    @Option(
        name: .customLong("cache-from"),
        help:
            "Import a build cache written by --cache-to: type=local,src=DIR or type=registry,ref=REG/REPO:TAG (or just REG/REPO:TAG) (repeatable)."
    )
    var cacheFrom: [String] = []
    @Option(name: .customLong("build-context"), help: "NAME=oci-layout:///path[@sha256:…] or NAME=DIR (repeatable).")
    var buildContext: [String] = []
    @Option(
        help:
            "Write the image digest to this file (the one printed on success): the image index's for several platforms (or with --attest-format buildkit and provenance on), else the manifest's."
    )
    var iidfile: String?
    @Option(
        name: .customLong("metadata-file"),
        help: "Write build result metadata (JSON) to this file; containerimage.digest is the --iidfile digest.")
    var metadataFile: String?
    @Option(help: "plain, tty, quiet or auto.") var progress: String = "auto"
    @Flag(name: .customLong("no-cache"), help: "Run every step; read nothing from the build cache.") var noCache =
        false
    @Option(
        name: .customLong("no-cache-filter"),
        help: "Stages whose steps do not read the build cache, comma-separated (repeatable).")
    var noCacheFilter: [String] = []
    // `.unconditional`: `--source-date-epoch -1` takes -1 as the value (and gets the same message as
    // `--source-date-epoch=-1`), not as a flag; so for `--step-timeout`.
    @Option(
        name: .customLong("source-date-epoch"), parsing: .unconditional,
        help: "Timestamps in the image (default: $SOURCE_DATE_EPOCH, else 0).")
    var sourceDateEpoch: String?
    @Option(name: .customLong("lock-file"), help: "The lock file (default: CONTEXT/hermetic.lock if it exists).")
    var lockFile: String?
    @Option(help: "A secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR (repeatable).")
    var secret: [String] = []
    @Option(help: "An SSH agent socket for RUN --mount=type=ssh: ID=SOCKET or ID (uses $SSH_AUTH_SOCK) (repeatable).")
    var ssh: [String] = []
    @Option(help: "Grant an entitlement: network.host or security.insecure (repeatable).")
    var allow: [String] = []
    @Option(name: .customLong("step-timeout"), parsing: .unconditional, help: "Seconds a RUN step may take.")
    var stepTimeout: Int?
    @Option(
        name: .customLong("state-dir"),
        help:
            "Where cache mounts persist (default: $HERMETIC_STATE_DIR, else /var/lib/hermetic; rootless: $XDG_STATE_HOME/hermetic or ~/.local/state/hermetic)."
    )
    var stateDir: String?
    @Option(help: "Provenance attestation: mode=max (default), mode=min, true or false.")
    var provenance: String?
    @Option(
        name: .customLong("attest-format"),
        help:
            "Where the provenance goes in an OCI output: referrers (default; OCI 1.1 artifact manifests beside the image in index.json, naming it as subject) or buildkit (attestation manifests inside an image index, as docker buildx writes them)."
    )
    var attestFormat: String = "referrers"
    @Option(
        name: .customLong("sign-key"), help: "A PEM private key (ECDSA P-256 or Ed25519) that signs the attestations.")
    var signKey: String?
    @Option(
        name: .customLong("attest-file"), help: "Also write the attestations here, as JSON lines of DSSE envelopes.")
    var attestFile: String?
    @Flag(
        name: .customLong("require-hermetic"),
        help: "Fail if any RUN step had network access or read a non-empty cache mount.")
    var requireHermetic = false
    @Option(help: "How exported layers are compressed: gzip (default), zstd or uncompressed.")
    var compression: String?
    @Option(name: .customLong("compression-level"), help: "gzip 0-9 (default 6), zstd 1-19 (default 3).")
    var compressionLevel: Int?
    @Option(
        help:
            "Stages (and platforms) built at once, and threads that compress layers (default: the number of cores); the output does not depend on it."
    )
    var jobs: Int?
    @OptionGroup var registry: RegistryFlags

    func run() async throws {
        try await reportingErrors {
            let environment = ProcessEnvironment.current()
            let signals = WorkspaceJanitor.installSignalHandlers()
            let options = try makeOptions(environment: environment)
            let result: BuildResult
            let log = BuildLog(
                mode: options.progress, stepOutputLimit: BuildLog.stepOutputLimit(environment: environment))
            do {
                result = try await Builder(
                    options: options, log: log, signals: signals
                ).build()
            } catch {
                // The progress ends (the tty view's last screen) before the error line.
                log.finish(error: escapedForOneLine("\(error)"))
                signals.settle()
                throw error
            }
            log.finish(error: nil)
            signals.settle()
            print(result.imageDigest.description)
        }
    }

    /// `--provenance` as buildx takes it: `true`/`false` (Go's bool spellings), or `mode=min|max` with
    /// optional `version=v1`, comma-separated.
    static func provenanceMode(_ value: String?) throws(ArgumentError) -> ProvenanceMode? {
        guard let value else { return .max }
        func fail(_ reason: String) -> ArgumentError {
            ArgumentError(argument: "--provenance", value: value, reason: reason)
        }
        switch value {
        case "true", "1", "t", "T", "TRUE", "True": return .max
        case "false", "0", "f", "F", "FALSE", "False": return nil
        default: break
        }
        var mode = ProvenanceMode.max
        for part in value.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { throw fail("\"\(part)\" is not key=value") }
            switch (pair[0], pair[1]) {
            case ("mode", "max"): mode = .max
            case ("mode", "min"): mode = .min
            case ("mode", _): throw fail("mode must be min or max")
            case ("version", "v1"): break
            case ("version", _): throw fail("only version=v1 (SLSA provenance v1) is written")
            default: throw fail("unknown key \"\(pair[0])\" (expected mode= or version=)")
            }
        }
        return mode
    }

    /// `--push` and the `-o` outputs that push (to their `name=`, else the `-t` names), and the other `-o`s.
    private func splitOutputs() throws -> (pushTargets: [RegistryReference], fileOutputs: [String]) {
        var pushNames: [(argument: String, value: String, names: [String])] = push ? [("--push", "", tag)] : []
        var fileOutputs: [String] = []
        for text in output {
            if let names = try RegistryPushOutput.parse(text) {
                pushNames.append(("--output", text, names.isEmpty ? tag : names))
            } else {
                fileOutputs.append(text)
            }
        }
        var targets: [RegistryReference] = []
        for (argument, value, names) in pushNames {
            guard !names.isEmpty else {
                throw ArgumentError(
                    argument: argument, value: value,
                    reason: "nothing to push to: name the image with -t REG/REPO:TAG (or name=)")
            }
            for reference in try RegistryPushOutput.references(names, argument: argument)
            where !targets.contains(reference) {
                targets.append(reference)
            }
        }
        return (targets, fileOutputs)
    }

    func makeOptions(environment: [String: String]) throws -> BuildOptions {
        var options = BuildOptions(contextDirectory: context)
        options.dockerfilePath = file
        for name in tag {
            if let problem = ImageReference.problem(name) {
                throw ArgumentError(argument: "-t", value: name, reason: problem)
            }
        }
        options.tags = tag
        options.buildArgs = try buildArg.compactMap { arg throws(ArgumentError) in
            try BuildArg.parse(arg, environment: environment)
        }
        options.target = target
        options.platforms = try parsePlatforms(platform)
        let (pushTargets, fileOutputs) = try splitOutputs()
        options.pushTargets = pushTargets
        let outputs = try fileOutputs.map { text throws(ArgumentError) in
            let parsed = try OutputSpec.parse(text)
            return (text: text, spec: parsed.spec, keys: parsed.keys)
        }
        options.outputs = outputs.map(\.spec)
        options.cacheTo = try cacheTo.flatMap { text throws(ArgumentError) in try CacheExportSpec.parse(text) }
        options.cacheFrom = try cacheFrom.flatMap { text throws(ArgumentError) in try CacheImportSpec.parse(text) }
        for entry in buildContext {
            let (name, named) = try NamedContext.parse(entry)
            guard options.namedContexts[name] == nil else {
                throw ArgumentError(argument: "--build-context", value: entry, reason: "\"\(name)\" is given twice")
            }
            options.namedContexts[name] = named
        }
        options.iidFile = iidfile
        options.metadataFile = metadataFile
        guard let mode = ProgressMode(rawValue: progress) else {
            throw ArgumentError(argument: "--progress", value: progress, reason: "expected plain, tty, quiet or auto")
        }
        options.progress = mode
        options.noCache = noCache
        options.noCacheFilter = noCacheFilter.flatMap { $0.split(separator: ",").map(String.init) }
        options.sourceDateEpoch = try SourceDateEpoch.resolve(flag: sourceDateEpoch, environment: environment)
        options.lockFile = lockFile
        for entry in secret {
            let (id, source) = try SecretSource.parse(entry)
            if case .file(let path) = source {
                var info = stat()
                guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
                    throw ArgumentError(argument: "--secret", value: entry, reason: "\(path) is not a readable file")
                }
            }
            options.secrets[id] = source
        }
        for entry in ssh {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            let id = parts[0]
            guard let socket = parts.count == 2 ? parts[1] : environment["SSH_AUTH_SOCK"], !socket.isEmpty else {
                throw ArgumentError(
                    argument: "--ssh", value: entry, reason: "no socket given and SSH_AUTH_SOCK is not set")
            }
            var info = stat()
            guard stat(socket, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK else {
                throw ArgumentError(argument: "--ssh", value: entry, reason: "\(socket) is not a Unix socket")
            }
            options.sshSockets[id] = socket
        }
        for entry in allow {
            guard let entitlement = Entitlement(rawValue: entry) else {
                throw ArgumentError(
                    argument: "--allow", value: entry, reason: "expected network.host or security.insecure")
            }
            options.entitlements.insert(entitlement)
        }
        if let stepTimeout {
            guard stepTimeout > 0 else {
                throw ArgumentError(
                    argument: "--step-timeout", value: String(stepTimeout),
                    reason: "must be a positive number of seconds")
            }
            options.stepTimeoutSeconds = stepTimeout
        }
        if let stateDir, FileSystem.exists(stateDir), !FileSystem.isDirectory(stateDir) {
            throw ArgumentError(argument: "--state-dir", value: stateDir, reason: "exists and is not a directory")
        }
        options.stateDirectory = stateDir
        options.registryTransport = try registry.transport()
        options.provenance = try Self.provenanceMode(provenance)
        options.signKeyPath = signKey
        guard let format = AttestationFormat(rawValue: attestFormat) else {
            throw ArgumentError(
                argument: "--attest-format", value: attestFormat, reason: "expected referrers or buildkit")
        }
        options.attestFormat = format
        options.attestFile = attestFile
        options.requireHermetic = requireHermetic
        let request = try CompressionRequest.resolve(
            compression: compression, level: compressionLevel, outputs: outputs)
        options.compression = request.compression
        options.forceCompression = request.force
        if let jobs {
            guard jobs > 0 else {
                throw ArgumentError(argument: "--jobs", value: String(jobs), reason: "must be a positive number")
            }
            options.jobs = jobs
        }
        return options
    }
}

/// How `build`, `lock`, `inspect`, `verify` and `rebuild` reach registries.
struct RegistryFlags: ParsableArguments {
    @Option(
        name: .customLong("registry-ca"),
        help: "A PEM CA certificate trusted for registries, beside the system's (repeatable).")
    var registryCA: [String] = []
    @Option(
        name: .customLong("insecure-registry"),
        help: "HOST[:PORT] of a registry that may be reached in plain HTTP (loopback ones always may; repeatable).")
    var insecureRegistry: [String] = []

    func transport() throws(ArgumentError) -> RegistryTransportPolicy {
        try registryTransport(insecure: insecureRegistry, caFiles: registryCA)
    }

    /// The transport, and the environment credentials and timeouts come from (`inspect`, `verify`, `rebuild`).
    func access() throws(ArgumentError) -> RegistryAccess {
        RegistryAccess(transport: try transport(), environment: ProcessEnvironment.current())
    }
}

/// `--insecure-registry HOST[:PORT]` values (a host, an optional port; no scheme or path) and
/// `--registry-ca` files (regular files; read as PEM when the first registry is reached).
func registryTransport(insecure: [String], caFiles: [String]) throws(ArgumentError) -> RegistryTransportPolicy {
    for entry in insecure {
        guard !entry.isEmpty, !entry.contains("/"), !entry.contains(where: { $0.isWhitespace }) else {
            throw ArgumentError(
                argument: "--insecure-registry", value: entry, reason: "expected HOST or HOST:PORT (no scheme or path)")
        }
    }
    for file in caFiles {
        var info = stat()
        guard stat(file, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw ArgumentError(argument: "--registry-ca", value: file, reason: "not a readable file")
        }
    }
    return RegistryTransportPolicy(insecureRegistries: insecure, caFiles: caFiles)
}

struct LockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lock", abstract: "Pin the images a Dockerfile uses into hermetic.lock.")

    @Argument(help: "The build context directory.") var context: String
    @Option(name: [.customShort("f"), .long], help: "The Dockerfile (default: CONTEXT/Dockerfile).") var file: String?
    @Option(name: .customLong("build-arg"), help: "A build arg, NAME=VALUE or NAME (repeatable).") var buildArg:
        [String] = []
    @Option(name: .customLong("build-context"), help: "NAME=oci-layout:///path (repeatable).") var buildContext:
        [String] = []
    @Option(help: "Target platforms, comma-separated (default: the host's).") var platform: [String] = []
    @Option(name: .customLong("lock-file"), help: "Where to write (default: CONTEXT/hermetic.lock).") var lockFile:
        String?
    @Flag(help: "Move registry pins to what their tags name now (only the NAMEs given, else all).")
    var update = false
    @Argument(help: "With --update: the image references (as the Dockerfile writes them) whose pins move.")
    var names: [String] = []
    @OptionGroup var registry: RegistryFlags

    func run() async throws {
        try await reportingErrors {
            let environment = ProcessEnvironment.current()
            var options = BuildOptions(contextDirectory: context)
            options.dockerfilePath = file
            options.buildArgs = try buildArg.compactMap { arg throws(ArgumentError) in
                try BuildArg.parse(arg, environment: environment)
            }
            options.platforms = try parsePlatforms(platform)
            for entry in buildContext {
                let (name, named) = try NamedContext.parse(entry)
                options.namedContexts[name] = named
            }
            options.lockFile = lockFile
            options.registryTransport = try registry.transport()
            guard update || names.isEmpty else {
                throw ArgumentError(
                    argument: "NAME", value: names[0], reason: "image names are taken only with --update")
            }
            var writer = LockWriter(options: options)
            writer.update = update
            writer.updateNames = names
            let written = try await writer.writeLockFile()
            print("wrote \(written.path): \(written.pinned.count) image(s) pinned")
        }
    }
}
