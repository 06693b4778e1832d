// Registry/ — pulls base images from OCI distribution registries by digest. In: a reference such as
// `127.0.0.1:5000/busybox@sha256:…` or `debian@sha256:…`, the build's platforms, credentials as docker keeps
// them (`~/.docker/config.json`, credential helpers) and the TLS/plain-HTTP settings; out: the image's
// manifests, config and layers in the content store, each verified against its digest and size while it
// streamed, and an OCI layout directory over them that the layout reader takes like any other.

/// A registry image reference, normalized as docker normalizes it (distribution's reference package):
/// `debian` → `docker.io/library/debian`, `user/app` → `docker.io/user/app`; a first component with a `.` or
/// a `:`, or `localhost`, is a registry host.
public struct RegistryReference: Sendable, Hashable, CustomStringConvertible {
    /// The registry as written after normalization (`docker.io`, `127.0.0.1:5000`).
    public var registry: String
    public var repository: String
    public var tag: String?
    public var digest: Digest?

    public init(registry: String, repository: String, tag: String? = nil, digest: Digest? = nil) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    public struct ParseError: HermeticError {
        public var reference: String
        public var reason: String
        public var description: String { "image reference \"\(reference)\": \(reason)" }
    }

    /// Parses `[HOST[:PORT]/]PATH[:TAG][@sha256:HEX]` (the `-t` grammar of `ImageReference`).
    public init(parsing text: String) throws(ParseError) {
        if let problem = ImageReference.problem(text) { throw ParseError(reference: text, reason: problem) }
        var rest = Substring(text)
        var digest: Digest?
        if let at = rest.lastIndex(of: "@") {
            do throws(DigestError) {
                digest = try Digest(parsing: String(rest[rest.index(after: at)...]))
            } catch {
                throw ParseError(reference: text, reason: error.description)
            }
            rest = rest[..<at]
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            tag = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
        }
        var registry = "docker.io"
        var path = String(rest)
        if let slash = rest.firstIndex(of: "/") {
            let first = rest[..<slash]
            if first.contains(".") || first.contains(":") || first == "localhost" || first.hasPrefix("[") {
                registry = String(first)
                path = String(rest[rest.index(after: slash)...])
            }
        }
        if registry == "index.docker.io" { registry = "docker.io" }
        if registry == "docker.io" && !path.contains("/") { path = "library/" + path }
        self.init(registry: registry, repository: path, tag: tag, digest: digest)
    }

    /// The host (and port) requests go to: Docker Hub's API is served by `registry-1.docker.io`.
    public var endpointHost: String { registry == "docker.io" ? "registry-1.docker.io" : registry }

    /// `docker.io/library/debian:bookworm@sha256:…`, the fully qualified form.
    public var description: String {
        "\(registry)/\(repository)" + (tag.map { ":\($0)" } ?? "") + (digest.map { "@\($0)" } ?? "")
    }

    /// The name without tag or digest, `docker.io/library/debian`.
    public var name: String { "\(registry)/\(repository)" }
}

/// Which registries may be spoken to in plain HTTP: as Docker, only those on the loopback network
/// (127.0.0.0/8, ::1, `localhost`) and those named by `--insecure-registry HOST[:PORT]`.
public struct RegistryTransportPolicy: Sendable, Hashable {
    /// `--insecure-registry` values, as given (`HOST` or `HOST:PORT`).
    public var insecureRegistries: [String]
    /// `--registry-ca` files, trusted beside the system's CA store.
    public var caFiles: [String]

    public init(insecureRegistries: [String] = [], caFiles: [String] = []) {
        self.insecureRegistries = insecureRegistries
        self.caFiles = caFiles
    }

    /// Whether `hostAndPort` (`127.0.0.1:5000`, `[::1]:5000`, `registry.local`) may be reached in plain HTTP.
    public func allowsPlainHTTP(_ hostAndPort: String) -> Bool {
        let host = Self.hostOnly(hostAndPort)
        if Self.isLoopback(host) { return true }
        return insecureRegistries.contains { $0 == hostAndPort || $0 == host }
    }

    /// `HOST` of `HOST:PORT` (brackets of an IPv6 literal removed).
    static func hostOnly(_ hostAndPort: String) -> String {
        if hostAndPort.hasPrefix("["), let close = hostAndPort.firstIndex(of: "]") {
            return String(hostAndPort[hostAndPort.index(after: hostAndPort.startIndex)..<close])
        }
        if let colon = hostAndPort.lastIndex(of: ":"), hostAndPort.filter({ $0 == ":" }).count == 1 {
            return String(hostAndPort[..<colon])
        }
        return hostAndPort
    }

    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts.allSatisfy({ UInt8($0) != nil }) else { return false }
        return parts[0] == "127"
    }
}
