/// Media types Hermetic reads and writes (OCI image-spec v1.1; Docker's accepted on input).
public enum MediaType {
    public static let imageManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let imageIndex = "application/vnd.oci.image.index.v1+json"
    public static let imageConfig = "application/vnd.oci.image.config.v1+json"
    public static let layerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let layerTar = "application/vnd.oci.image.layer.v1.tar"
    public static let layerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    public static let dockerForeignLayerGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    public static let dsseEnvelope = "application/vnd.dsse.envelope.v1+json"
    /// The OCI 1.1 empty descriptor's type: the config of an artifact manifest that needs none (its blob `{}`).
    public static let emptyJSON = "application/vnd.oci.empty.v1+json"

    public static func isManifest(_ type: String) -> Bool { type == imageManifest || type == dockerManifest }
    public static func isIndex(_ type: String) -> Bool { type == imageIndex || type == dockerManifestList }

    /// The OCI media type for the same layer bytes (Docker's gzip types are relabeled; OCI ones kept).
    public static func ociLayerMediaType(forAny type: String) -> String {
        switch type {
        case dockerLayerGzip, dockerForeignLayerGzip: return layerGzip
        case "application/vnd.docker.image.rootfs.diff.tar": return layerTar
        default: return type
        }
    }
}

/// An OS/architecture pair, with containerd's normalization (`x86_64` → `amd64`, `aarch64` → `arm64`,
/// arm64's default variant `v8` dropped, arm's default variant `v7`).
public struct Platform: Codable, Sendable, Hashable, CustomStringConvertible {
    public var os: String
    public var architecture: String
    public var variant: String?
    public var osVersion: String?
    public var osFeatures: [String]?

    enum CodingKeys: String, CodingKey {
        case os, architecture, variant
        case osVersion = "os.version"
        case osFeatures = "os.features"
    }

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// The machine the builder runs on.
    public static var host: Platform {
        #if arch(x86_64)
            return Platform(os: "linux", architecture: "amd64")
        #elseif arch(arm64)
            return Platform(os: "linux", architecture: "arm64")
        #else
            return Platform(os: "linux", architecture: "unknown")
        #endif
    }

    public var description: String {
        variant.map { "\(os)/\(architecture)/\($0)" } ?? "\(os)/\(architecture)"
    }
}

public struct Descriptor: Codable, Sendable, Hashable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var urls: [String]?
    public var annotations: [String: String]?
    public var platform: Platform?
    public var artifactType: String?

    public init(mediaType: String, digest: Digest, size: Int64) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
    }
}

public struct ImageManifest: Codable, Sendable, Hashable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var artifactType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    public var subject: Descriptor?
    public var annotations: [String: String]?

    public init(config: Descriptor, layers: [Descriptor]) {
        self.schemaVersion = 2
        self.mediaType = MediaType.imageManifest
        self.config = config
        self.layers = layers
    }
}

public struct ImageIndex: Codable, Sendable, Hashable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var artifactType: String?
    public var manifests: [Descriptor]
    public var subject: Descriptor?
    public var annotations: [String: String]?

    public init(manifests: [Descriptor]) {
        self.schemaVersion = 2
        self.mediaType = MediaType.imageIndex
        self.manifests = manifests
    }
}

/// The image config (OCI image-spec `config.json`, Docker's field names). Absent and empty optional fields
/// are omitted when encoded, as Docker's `omitempty` does.
public struct ImageConfig: Codable, Sendable, Hashable {
    public var created: String?
    public var author: String?
    public var architecture: String
    public var os: String
    public var variant: String?
    public var osVersion: String?
    public var config: ContainerConfig?
    public var rootfs: RootFS
    public var history: [History]?

    enum CodingKeys: String, CodingKey {
        case created, author, architecture, os, variant, config, rootfs, history
        case osVersion = "os.version"
    }

    public static var empty: ImageConfig {
        ImageConfig(architecture: Platform.host.architecture, os: "linux", rootfs: RootFS(diffIDs: []))
    }

    public init(architecture: String, os: String, rootfs: RootFS) {
        self.architecture = architecture
        self.os = os
        self.rootfs = rootfs
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        created = try c.decodeIfPresent(String.self, forKey: .created)
        author = try c.decodeIfPresent(String.self, forKey: .author)
        architecture = try c.decodeIfPresent(String.self, forKey: .architecture) ?? ""
        os = try c.decodeIfPresent(String.self, forKey: .os) ?? ""
        variant = try c.decodeIfPresent(String.self, forKey: .variant)
        osVersion = try c.decodeIfPresent(String.self, forKey: .osVersion)
        config = try c.decodeIfPresent(ContainerConfig.self, forKey: .config)
        rootfs = try c.decode(RootFS.self, forKey: .rootfs)
        history = try c.decodeIfPresent([History].self, forKey: .history)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(created, forKey: .created)
        try c.encodeIfPresent(author.flatMap { $0.isEmpty ? nil : $0 }, forKey: .author)
        try c.encode(architecture, forKey: .architecture)
        try c.encode(os, forKey: .os)
        try c.encodeIfPresent(variant, forKey: .variant)
        try c.encodeIfPresent(osVersion, forKey: .osVersion)
        if let config, !config.isEmpty { try c.encode(config, forKey: .config) }
        try c.encode(rootfs, forKey: .rootfs)
        if let history, !history.isEmpty { try c.encode(history, forKey: .history) }
    }
}

public struct RootFS: Codable, Sendable, Hashable {
    public var type: String
    public var diffIDs: [Digest]

    enum CodingKeys: String, CodingKey {
        case type
        case diffIDs = "diff_ids"
    }

    public init(diffIDs: [Digest]) {
        self.type = "layers"
        self.diffIDs = diffIDs
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decode(String.self, forKey: .type)
        diffIDs = try c.decodeIfPresent([Digest].self, forKey: .diffIDs) ?? []
    }
}

public struct History: Codable, Sendable, Hashable {
    public var created: String?
    public var createdBy: String?
    public var author: String?
    public var comment: String?
    public var emptyLayer: Bool?

    enum CodingKeys: String, CodingKey {
        case created, author, comment
        case createdBy = "created_by"
        case emptyLayer = "empty_layer"
    }

    public init(created: String?, createdBy: String?, comment: String?, emptyLayer: Bool?) {
        self.created = created
        self.createdBy = createdBy
        self.comment = comment
        self.emptyLayer = emptyLayer
    }

    /// Whether this entry made a layer (Docker's rule: unless `empty_layer` is true).
    public var madeLayer: Bool { emptyLayer != true }
}

/// The `config` object: what a container of the image runs with.
public struct ContainerConfig: Codable, Sendable, Hashable {
    public var user: String?
    public var exposedPorts: [String: EmptyObject]?
    public var env: [String]?
    public var entrypoint: [String]?
    public var cmd: [String]?
    public var volumes: [String: EmptyObject]?
    public var workingDir: String?
    public var labels: [String: String]?
    public var stopSignal: String?
    public var healthcheck: HealthConfig?
    public var onBuild: [String]?
    public var shell: [String]?
    public var argsEscaped: Bool?

    enum CodingKeys: String, CodingKey {
        case user = "User"
        case exposedPorts = "ExposedPorts"
        case env = "Env"
        case entrypoint = "Entrypoint"
        case cmd = "Cmd"
        case volumes = "Volumes"
        case workingDir = "WorkingDir"
        case labels = "Labels"
        case stopSignal = "StopSignal"
        case healthcheck = "Healthcheck"
        case onBuild = "OnBuild"
        case shell = "Shell"
        case argsEscaped = "ArgsEscaped"
    }

    public init() {}

    var isEmpty: Bool { self == ContainerConfig() }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        func nonEmpty(_ s: String?) -> String? { s.flatMap { $0.isEmpty ? nil : $0 } }
        try c.encodeIfPresent(nonEmpty(user), forKey: .user)
        if let exposedPorts, !exposedPorts.isEmpty { try c.encode(exposedPorts, forKey: .exposedPorts) }
        if let env, !env.isEmpty { try c.encode(env, forKey: .env) }
        // Cmd, Entrypoint and Shell are `omitempty` in the image spec: `CMD []` leaves no Cmd at all.
        if let entrypoint, !entrypoint.isEmpty { try c.encode(entrypoint, forKey: .entrypoint) }
        if let cmd, !cmd.isEmpty { try c.encode(cmd, forKey: .cmd) }
        if let volumes, !volumes.isEmpty { try c.encode(volumes, forKey: .volumes) }
        try c.encodeIfPresent(nonEmpty(workingDir), forKey: .workingDir)
        if let labels, !labels.isEmpty { try c.encode(labels, forKey: .labels) }
        try c.encodeIfPresent(nonEmpty(stopSignal), forKey: .stopSignal)
        try c.encodeIfPresent(healthcheck, forKey: .healthcheck)
        if let onBuild, !onBuild.isEmpty { try c.encode(onBuild, forKey: .onBuild) }
        if let shell, !shell.isEmpty { try c.encode(shell, forKey: .shell) }
        if argsEscaped == true { try c.encode(true, forKey: .argsEscaped) }
    }
}

/// Docker's `Healthcheck`: durations in nanoseconds.
public struct HealthConfig: Codable, Sendable, Hashable {
    public var test: [String]
    public var interval: Int64?
    public var timeout: Int64?
    public var startPeriod: Int64?
    public var startInterval: Int64?
    public var retries: Int?

    enum CodingKeys: String, CodingKey {
        case test = "Test"
        case interval = "Interval"
        case timeout = "Timeout"
        case startPeriod = "StartPeriod"
        case startInterval = "StartInterval"
        case retries = "Retries"
    }

    public init(test: [String]) {
        self.test = test
    }

    /// A base image written with `omitempty` may leave any field out, `Test` included.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        test = try c.decodeIfPresent([String].self, forKey: .test) ?? []
        interval = try c.decodeIfPresent(Int64.self, forKey: .interval)
        timeout = try c.decodeIfPresent(Int64.self, forKey: .timeout)
        startPeriod = try c.decodeIfPresent(Int64.self, forKey: .startPeriod)
        startInterval = try c.decodeIfPresent(Int64.self, forKey: .startInterval)
        retries = try c.decodeIfPresent(Int.self, forKey: .retries)
    }

    /// Docker's HealthConfig fields are all `omitempty`: an empty test and zero durations or retries are left
    /// out (a base image's zeros too).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        func nonZero<T: BinaryInteger>(_ value: T?) -> T? { value.flatMap { $0 == 0 ? nil : $0 } }
        if !test.isEmpty { try c.encode(test, forKey: .test) }
        try c.encodeIfPresent(nonZero(interval), forKey: .interval)
        try c.encodeIfPresent(nonZero(timeout), forKey: .timeout)
        try c.encodeIfPresent(nonZero(startPeriod), forKey: .startPeriod)
        try c.encodeIfPresent(nonZero(startInterval), forKey: .startInterval)
        try c.encodeIfPresent(nonZero(retries), forKey: .retries)
    }
}
