import Foundation

/// Everything a build needs from the person running it, already parsed and validated.
/// The CLI fills it from `docker buildx build`-style flags; tests fill it directly.
public struct BuildOptions: Sendable {
    public var contextDirectory: String
    /// `-f`; nil means `<context>/Dockerfile`.
    public var dockerfilePath: String?
    public var tags: [String] = []
    /// `--build-arg`, in command-line order; a later value for the same name wins.
    public var buildArgs: [BuildArg] = []
    public var target: String?
    /// `--platform`; empty means the host platform.
    public var platforms: [String] = []
    public var outputs: [OutputSpec] = []
    /// `-o type=image,push=true`, `-o type=registry` and `--push`: the names the image is pushed to.
    public var pushTargets: [RegistryReference] = []
    /// `--cache-to`: where the cached steps of this build are exported (never in the provenance).
    public var cacheTo: [CacheExportSpec] = []
    /// `--cache-from`: exported caches read into the store before the steps run (never in the provenance).
    public var cacheFrom: [CacheImportSpec] = []
    public var namedContexts: [String: NamedContext] = [:]
    public var iidFile: String?
    public var metadataFile: String?
    public var progress: ProgressMode = .plain
    /// `--no-cache`: no step reads the build cache (results are still stored for later builds).
    public var noCache = false
    /// `--no-cache-filter`: stages (names or indexes) whose steps do not read the build cache.
    public var noCacheFilter: [String] = []
    public var sourceDateEpoch: Int64 = 0
    /// `hermetic.lock` path; nil means `<context>/hermetic.lock` when that file exists.
    public var lockFile: String?
    /// `--secret id=…,src=…|env=…`: values RUN steps may mount; never written anywhere.
    public var secrets: [String: SecretSource] = [:]
    /// `--ssh id=socket`: agent sockets RUN steps may mount.
    public var sshSockets: [String: String] = [:]
    /// `--allow`: entitlements the person running the build grants (a Dockerfile cannot).
    public var entitlements: Set<Entitlement> = []
    /// `--step-timeout`: seconds a RUN step may take.
    public var stepTimeoutSeconds: Int?
    /// Where cache mounts persist between builds.
    public var stateDirectory: String?
    /// `--provenance`: nil turns attestations off.
    public var provenance: ProvenanceMode? = .max
    /// `--attest-format`: the provenance as OCI 1.1 referrers beside the image (the default), or inside an
    /// image index as BuildKit stores it.
    public var attestFormat: AttestationFormat = .referrers
    /// `--sign-key`: a PEM private key that signs the attestations (DSSE).
    public var signKeyPath: String?
    /// `--attest-file`: where to also write the attestations, as JSON lines of DSSE envelopes.
    public var attestFile: String?
    /// `--require-hermetic`: fail if any RUN step had network access or read a non-empty cache mount.
    public var requireHermetic = false
    /// `--compression`/`--compression-level` (or an output's `compression=` keys): how exported layers
    /// this build makes are compressed. Layers of steps that no output carries are never compressed.
    public var compression: LayerCompression = .default
    /// An output's `force-compression=true`: base-image layers compressed otherwise are compressed again
    /// with `compression` (else they keep the blob they came as).
    public var forceCompression = false
    /// `--insecure-registry` and `--registry-ca`: which registries may be spoken to in plain HTTP, and the
    /// CAs trusted beside the system's.
    public var registryTransport = RegistryTransportPolicy()
    /// `--jobs`: how many stages run at once (StageScheduler) and how many threads compress; never changes
    /// a byte of the output.
    public var jobs: Int = ProcessInfo.processInfo.activeProcessorCount

    public init(contextDirectory: String) {
        self.contextDirectory = contextDirectory
    }
}

public struct BuildArg: Sendable, Hashable {
    public var name: String
    public var value: String
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }

    /// `NAME=VALUE`, or `NAME` alone, which takes the value from the environment; nil when the environment
    /// has no such variable: buildx then passes nothing (its listToMap), so the ARG's default applies.
    public static func parse(_ text: String, environment: [String: String]) throws(ArgumentError) -> BuildArg? {
        let name: String
        let value: String?
        if let eq = text.firstIndex(of: "=") {
            name = String(text[..<eq])
            value = String(text[text.index(after: eq)...])
        } else {
            name = text
            value = environment[text]
        }
        guard !name.isEmpty, !name.contains(where: { $0.isWhitespace }) else {
            throw ArgumentError(
                argument: "--build-arg", value: text, reason: "the name must be non-empty and have no spaces")
        }
        return value.map { BuildArg(name: name, value: $0) }
    }
}

/// Where a secret's value comes from. The value is read only when a step mounts it.
public enum SecretSource: Sendable, Hashable {
    case file(String)
    case environment(String)

    /// `id=NAME,src=PATH` (or `source=`), `id=NAME,env=VAR`, or `id=NAME` alone (env var NAME, as buildx).
    public static func parse(_ text: String) throws(ArgumentError) -> (id: String, source: SecretSource) {
        var fields: [String: String] = [:]
        for part in text.split(separator: ",") {
            guard let eq = part.firstIndex(of: "=") else {
                throw ArgumentError(argument: "--secret", value: text, reason: "\"\(part)\" is not key=value")
            }
            fields[String(part[..<eq]).lowercased()] = String(part[part.index(after: eq)...])
        }
        guard let id = fields["id"], !id.isEmpty else {
            throw ArgumentError(argument: "--secret", value: text, reason: "id= is required")
        }
        if let path = fields["src"] ?? fields["source"] { return (id, .file(path)) }
        if let variable = fields["env"] { return (id, .environment(variable)) }
        return (id, .environment(id))
    }
}

/// Privileges a build may use only when the person running it grants them with `--allow`.
public enum Entitlement: String, Sendable, Hashable, CaseIterable {
    case networkHost = "network.host"
    case securityInsecure = "security.insecure"
}

public enum ProgressMode: String, Sendable, CaseIterable {
    case plain, tty, quiet, auto
}

/// `--output`: what the build writes, in buildx's `type=…,dest=…` form.
public enum OutputSpec: Sendable, Hashable {
    /// An OCI image layout directory.
    case ociDirectory(String)
    /// An OCI image layout packed in a tar file.
    case ociArchive(String)
    /// A `docker save`-style tar (also an OCI layout), loadable by `podman load` / `docker load`.
    case dockerArchive(String)
    /// The final root filesystem, unpacked into a directory.
    case local(String)

    public var destination: String {
        switch self {
        case .ociDirectory(let d), .ociArchive(let d), .dockerArchive(let d), .local(let d): return d
        }
    }

    /// Whether the output holds the image's layer blobs (so their compression), not just its files.
    public var carriesLayers: Bool {
        if case .local = self { return false }
        return true
    }

    /// Accepts `type=oci,dest=DIR`, `type=oci,dest=FILE.tar`, `type=docker,dest=FILE.tar`,
    /// `type=local,dest=DIR`, and a bare `PATH` (buildx's shorthand for `type=local,dest=PATH`).
    public init(parsing text: String) throws(ArgumentError) {
        self = try Self.parse(text).spec
    }

    /// The output and its compression keys (`compression`, `compression-level`, `force-compression`, taken
    /// by `type=oci` and `type=docker` as by BuildKit's image exporters), as given: `CompressionRequest`
    /// checks their values.
    public static func parse(_ text: String) throws(ArgumentError) -> (spec: OutputSpec, keys: OutputCompressionKeys) {
        func fail(_ reason: String) -> ArgumentError {
            ArgumentError(argument: "--output", value: text, reason: reason)
        }
        guard text.contains("=") else {
            guard !text.isEmpty, text != "-" else { throw fail("a destination path is required") }
            return (.local(text), OutputCompressionKeys())
        }
        var fields: [String: String] = [:]
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let eq = part.firstIndex(of: "=") else { throw fail("\"\(part)\" is not key=value") }
            let key = String(part[..<eq]).lowercased()
            let value = String(part[part.index(after: eq)...])
            guard fields[key] == nil else { throw fail("\"\(key)\" is given twice") }
            fields[key] = value
        }
        // The type first, then the keys of that type, then their values: `type=registry,name=x` is about the
        // type, not a missing dest=.
        guard let type = fields["type"] else { throw fail("type= is required (oci, docker, local, image or registry)") }
        let imageKeys = ["type", "dest", "tar"] + OutputCompressionKeys.names
        let keysOfType: [String: [String]] = ["oci": imageKeys, "docker": imageKeys, "local": ["type", "dest", "tar"]]
        guard let known = keysOfType[type] else {
            throw fail("unknown type \"\(type)\" (supported: oci, docker, local, image, registry)")
        }
        let unknown = fields.keys.filter { !known.contains($0) }.sorted()
        if !unknown.isEmpty {
            let listed = unknown.map { "\"\($0)\"" }.joined(separator: ", ")
            let hint = unknown.contains("name") ? "; the image is named with -t" : ""
            throw fail(
                "unknown \(unknown.count == 1 ? "key" : "keys") \(listed) for type=\(type) (its keys: "
                    + known.dropFirst().joined(separator: ", ") + hint + ")")
        }
        guard let dest = fields["dest"], !dest.isEmpty else { throw fail("dest= is required") }
        let tarWanted: Bool
        switch fields["tar"] {
        case nil: tarWanted = dest.hasSuffix(".tar")
        case "true": tarWanted = true
        case "false": tarWanted = false
        case let other?: throw fail("tar= must be true or false, not \"\(other)\"")
        }
        let keys = OutputCompressionKeys(
            compression: fields["compression"], level: fields["compression-level"], force: fields["force-compression"])
        switch type {
        case "oci": return (tarWanted ? .ociArchive(dest) : .ociDirectory(dest), keys)
        case "docker":
            guard tarWanted || fields["tar"] == nil else { throw fail("type=docker is always a tar file") }
            return (.dockerArchive(dest), keys)
        case "local":
            guard !tarWanted || fields["tar"] == nil else { throw fail("type=local is always a directory") }
            return (.local(dest), keys)
        default: throw fail("unknown type \"\(type)\" (supported: oci, docker, local, image, registry)")
        }
    }
}

/// `-o type=image,name=REF[,push=true]` and `-o type=registry,name=REF` (buildx's image exporter). Hermetic
/// has no local image store, so `type=image` without `push=true` is refused rather than dropping the image.
public enum RegistryPushOutput {
    /// The names to push to (empty: the `-t` names), or nil when `text` is another output type.
    public static func parse(_ text: String) throws(ArgumentError) -> [String]? {
        func fail(_ reason: String) -> ArgumentError {
            ArgumentError(argument: "--output", value: text, reason: reason)
        }
        var fields: [String: String] = [:]
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let eq = part.firstIndex(of: "=") else { return nil }
            let key = String(part[..<eq]).lowercased()
            guard fields[key] == nil else { throw fail("\"\(key)\" is given twice") }
            fields[key] = String(part[part.index(after: eq)...])
        }
        guard let type = fields["type"], type == "image" || type == "registry" else { return nil }
        let unknown = fields.keys.filter { !["type", "name", "push"].contains($0) }.sorted()
        guard unknown.isEmpty else {
            throw fail(
                "unknown key\(unknown.count == 1 ? "" : "s") " + unknown.map { "\"\($0)\"" }.joined(separator: ", ")
                    + " for type=\(type) (its keys: name, push)")
        }
        switch fields["push"] ?? (type == "registry" ? "true" : "false") {
        case "true": break
        case "false":
            throw fail(
                "hermetic has no local image store: type=\(type) needs push=true (or use type=oci,dest=DIR, "
                    + "type=docker,dest=FILE.tar)")
        case let other: throw fail("push= must be true or false, not \"\(other)\"")
        }
        return fields["name"].map { $0.isEmpty ? [] : [$0] } ?? []
    }

    /// Each name as a registry reference with a tag (`latest` when it has none); a digest is refused.
    public static func references(_ names: [String], argument: String) throws(ArgumentError) -> [RegistryReference] {
        var result: [RegistryReference] = []
        for name in names {
            var reference: RegistryReference
            do throws(RegistryReference.ParseError) {
                reference = try RegistryReference(parsing: name)
            } catch {
                throw ArgumentError(argument: argument, value: name, reason: error.reason)
            }
            guard reference.digest == nil else {
                throw ArgumentError(
                    argument: argument, value: name, reason: "a pushed image is named by a tag, not a digest")
            }
            if reference.tag == nil { reference.tag = "latest" }
            if !result.contains(reference) { result.append(reference) }
        }
        return result
    }
}

/// `--build-context NAME=VALUE`: an input the Dockerfile names in `FROM NAME` or `COPY --from=NAME`.
public enum NamedContext: Sendable, Hashable {
    /// `oci-layout:///path[:tag][@sha256:…]`: an image from an OCI layout on disk.
    case ociLayout(path: String, tag: String?, digest: Digest?)
    /// A plain directory, usable as `COPY --from=NAME` source.
    case directory(String)
    /// `docker-image://REF[@sha256:…]`: an image pulled from a registry (`REF` normalized as docker does).
    case dockerImage(RegistryReference)

    public static func parse(_ text: String) throws(ArgumentError) -> (name: String, context: NamedContext) {
        func fail(_ reason: String) -> ArgumentError {
            ArgumentError(argument: "--build-context", value: text, reason: reason)
        }
        guard let eq = text.firstIndex(of: "=") else { throw fail("expected NAME=VALUE") }
        let name = String(text[..<eq])
        guard !name.isEmpty, !name.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7f }) else {
            throw fail("the name must be non-empty, without spaces or control characters")
        }
        let value = String(text[text.index(after: eq)...])
        guard !name.isEmpty else { throw fail("the name is empty") }
        guard !value.isEmpty else { throw fail("the value is empty") }
        let scheme = "oci-layout://"
        if value.hasPrefix(scheme) {
            var rest = String(value.dropFirst(scheme.count))
            var digest: Digest?
            if let at = rest.lastIndex(of: "@") {
                do throws(DigestError) {
                    digest = try Digest(parsing: String(rest[rest.index(after: at)...]))
                } catch {
                    throw fail(error.description)
                }
                rest = String(rest[..<at])
            }
            var tag: String?
            if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
                tag = String(rest[rest.index(after: colon)...])
                rest = String(rest[..<colon])
            }
            guard rest.hasPrefix("/") else { throw fail("oci-layout:// needs an absolute path (oci-layout:///path)") }
            return (name, .ociLayout(path: rest, tag: tag, digest: digest))
        }
        let registryScheme = "docker-image://"
        if value.hasPrefix(registryScheme) {
            do throws(RegistryReference.ParseError) {
                return (
                    name, .dockerImage(try RegistryReference(parsing: String(value.dropFirst(registryScheme.count))))
                )
            } catch {
                throw fail(error.reason)
            }
        }
        if let colon = value.firstIndex(of: ":"), value[colon...].hasPrefix("://") {
            throw fail(
                "unsupported scheme \"\(value[..<colon])\" (hermetic builds accept oci-layout://, docker-image:// and local directories)"
            )
        }
        return (name, .directory(value))
    }
}

/// A bad command-line argument: printed as `--flag "value": reason`.
public struct ArgumentError: HermeticError, Equatable {
    public var argument: String
    public var value: String
    public var reason: String
    public init(argument: String, value: String, reason: String) {
        self.argument = argument
        self.value = value
        self.reason = reason
    }
    public var description: String { "\(argument) \"\(value)\": \(reason)" }
}
