import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// Speaks the pull side of the OCI distribution API: `GET /v2/NAME/manifests/DIGEST` and
/// `GET /v2/NAME/blobs/DIGEST`, with docker's authentication (Basic, and the Bearer token flow a
/// `WWW-Authenticate` challenge starts), redirects followed by hand (credentials only to the registry's own
/// origin), HTTPS unless the transport policy allows plain HTTP for the host, and an idle-read timeout.
/// It hands back a response whose body the caller streams and verifies; it keeps nothing itself.
public final class RegistryClient: Sendable {
    let http: HTTPClient
    let policy: RegistryTransportPolicy
    let credentials: DockerCredentialStore
    let session = RegistrySession()
    let readTimeoutSeconds: Int64

    static let maximumRedirects = 10

    /// Where a redirect leads (its `Location`, against `url`); the error when it has none or when there have
    /// been more than `maximumRedirects`.
    static func redirectTarget(
        _ response: HTTPClientResponse, from url: String, redirects: Int, _ reference: RegistryReference,
        _ subject: String
    ) throws -> String {
        guard redirects <= maximumRedirects, let location = response.headers.first(name: "Location"),
            let next = URL(string: location, relativeTo: URL(string: url))?.absoluteURL.absoluteString
        else {
            throw RegistryError(
                host: reference.registry, subject: subject,
                reason: redirects > maximumRedirects
                    ? "redirect loop (more than \(maximumRedirects) redirects)"
                    : "a redirect (\(response.status.code)) without a usable Location")
        }
        return next
    }
    static let attempts = 4
    static let userAgent = "hermetic/\(HermeticVersion.string)"

    /// `readTimeoutSeconds`: how long a response may send nothing before the fetch fails (a stalled server).
    public init(policy: RegistryTransportPolicy, credentials: DockerCredentialStore, readTimeoutSeconds: Int64 = 60)
        throws
    {
        var tls = TLSConfiguration.makeClientConfiguration()
        for file in policy.caFiles {
            // Read now, so a bad file is an argument error rather than a TLS failure at the first pull.
            do {
                tls.additionalTrustRoots.append(.certificates(try NIOSSLCertificate.fromPEMFile(file)))
            } catch {
                throw ArgumentError(
                    argument: "--registry-ca", value: file, reason: "not a readable PEM certificate file")
            }
        }
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(30), read: .seconds(readTimeoutSeconds)))
        // A connection that cannot be made fails at once (the client would otherwise try again until the
        // connect timeout, 30 s per probe of a plain-HTTP or untrusted registry); `withRetries` tries again.
        configuration.connectionPool.retryConnectionEstablishment = false
        self.http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.policy = policy
        self.credentials = credentials
        self.readTimeoutSeconds = readTimeoutSeconds
    }

    public func shutdown() async { try? await http.shutdown() }

    /// GETs `path` (below `/v2/`) of the reference's registry; 200 (or 206, when `resumingAt` asked for the
    /// bytes from there on) returns the response with its body unread. Every other outcome is a
    /// `RegistryError` naming the host and `subject`.
    func get(
        _ reference: RegistryReference, path: String, accept: [String], subject: String, resumingAt: Int64? = nil
    ) async throws -> HTTPClientResponse {
        let host = reference.endpointHost
        let base = try await origin(for: host, registry: reference.registry)
        var url = base + "/v2/" + path
        var redirects = 0
        var authenticated = false
        var sentCredentials = false
        while true {
            var request = HTTPClientRequest(url: url)
            request.headers.add(name: "Accept", value: accept.joined(separator: ", "))
            request.headers.add(name: "User-Agent", value: Self.userAgent)
            if let resumingAt { request.headers.add(name: "Range", value: "bytes=\(resumingAt)-") }
            let sameOrigin = Self.origin(of: url) == base
            let authorization =
                sameOrigin ? await session.authorization(host: host, repository: reference.repository) : nil
            if let authorization { request.headers.add(name: "Authorization", value: authorization) }
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, timeout: .hours(6))
            } catch {
                throw transportError(error, host: Self.host(of: url) ?? host, subject: subject)
            }
            let code = response.status.code
            switch code {
            case 200:
                return response
            case 206 where resumingAt != nil:
                return response
            case 301, 302, 303, 307, 308:
                await Self.discard(response)
                redirects += 1
                let next = try Self.redirectTarget(response, from: url, redirects: redirects, reference, subject)
                try checkScheme(of: next, registry: reference.registry, subject: subject)
                url = next
            case 401 where sameOrigin:
                let challenge = response.headers.first(name: "WWW-Authenticate") ?? ""
                await Self.discard(response)
                guard !authenticated else {
                    throw RegistryError(
                        host: reference.registry, subject: subject,
                        reason: Self.refusedAgain(reference, challenge: challenge, sentCredentials: sentCredentials))
                }
                sentCredentials = try await authenticate(
                    reference, challenge: challenge, subject: subject, sent: authorization)
                authenticated = true
            case 404:
                await Self.discard(response)
                throw RegistryError(host: reference.registry, subject: subject, reason: "not found (404)")
            case 429, 500...599:
                await Self.discard(response)
                throw RegistryError(
                    host: Self.host(of: url) ?? host, subject: subject, reason: "answered \(code)", retryable: true)
            default:
                await Self.discard(response)
                throw RegistryError(
                    host: Self.host(of: url) ?? host, subject: subject,
                    reason: "answered \(code) \(response.status.reasonPhrase)")
            }
        }
    }

    /// Runs `body` up to `attempts` times while it fails with a retryable error, waiting 0.5 s, 1 s, 2 s.
    func withRetries<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await body()
            } catch let error as RegistryError where error.retryable && attempt < Self.attempts {
                try await Task.sleep(nanoseconds: 500_000_000 << (attempt - 1))
                attempt += 1
            } catch var error as RegistryError where error.retryable {
                error.reason += " (after \(attempt) tries)"
                throw error
            }
        }
    }

    // MARK: Transport

    /// `https://HOST`, unless the policy allows plain HTTP for the host and `/v2/` answers over plain HTTP
    /// as a registry does (200 or 401): then `http://HOST`. Plain HTTP is asked first there because a TLS
    /// hello sent to a plain-HTTP server may get no answer at all (the server waits for a request line),
    /// while a TLS server answers plain HTTP at once (400); which scheme is allowed is the same as docker's.
    func origin(for host: String, registry: String) async throws -> String {
        if let known = await session.origin(host: host) { return known }
        var plainFailure: String?
        if policy.allowsPlainHTTP(host) {
            let plain = "http://" + host
            do {
                let status = try await ping(plain)
                if status == 200 || status == 401 {
                    await session.setOrigin(plain, host: host)
                    return plain
                }
                plainFailure = "/v2/ answered \(status) over HTTP"
            } catch {
                plainFailure = Self.describe(error, readTimeout: readTimeoutSeconds)
            }
        }
        let secure = "https://" + host
        do {
            _ = try await ping(secure)
        } catch {
            let httpsFailure = Self.describe(error, readTimeout: readTimeoutSeconds)
            let reason =
                plainFailure.map { "cannot be reached over HTTP (\($0)) or HTTPS (\(httpsFailure))" }
                ?? "cannot be reached over HTTPS (\(httpsFailure)); plain HTTP is used only for loopback "
                + "registries and --insecure-registry \(host)"
            throw RegistryError(host: registry, subject: "", reason: reason)
        }
        await session.setOrigin(secure, host: host)
        return secure
    }

    private func ping(_ origin: String) async throws -> UInt {
        var request = HTTPClientRequest(url: origin + "/v2/")
        request.headers.add(name: "User-Agent", value: Self.userAgent)
        let response = try await http.execute(request, timeout: .seconds(readTimeoutSeconds + 30))
        await Self.discard(response)
        return response.status.code
    }

    /// A redirect may go to HTTPS anywhere, or to plain HTTP where the policy allows it for that host.
    private func checkScheme(of url: String, registry: String, subject: String) throws {
        guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), let host = Self.host(of: url)
        else {
            throw RegistryError(host: registry, subject: subject, reason: "redirected to an unusable address")
        }
        if scheme == "https" { return }
        guard scheme == "http", policy.allowsPlainHTTP(host) else {
            throw RegistryError(
                host: registry, subject: subject,
                reason:
                    "redirected to \(scheme)://\(host), which is not HTTPS (plain HTTP only for loopback registries and --insecure-registry)"
            )
        }
    }

    func transportError(_ error: any Error, host: String, subject: String) -> RegistryError {
        // A stall or a certificate that is not trusted is not fixed by asking again.
        let lasting = (error as? HTTPClientError) == .readTimeout || error is NIOSSLError || error is NIOSSLExtraError
        return RegistryError(
            host: host, subject: subject, reason: Self.describe(error, readTimeout: readTimeoutSeconds),
            retryable: !lasting)
    }

    static func describe(_ error: any Error, readTimeout: Int64) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .readTimeout: return "stalled: no data for \(readTimeout) s (timed out)"
            case .connectTimeout: return "the connection timed out"
            case .remoteConnectionClosed: return "the connection was closed before the response was complete"
            case .deadlineExceeded: return "the request took too long (timed out)"
            default: break
            }
        }
        if error is NIOSSLError || error is NIOSSLExtraError {
            let text = "\(error)"
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                return "TLS: the registry's certificate is not trusted (CERTIFICATE_VERIFY_FAILED; "
                    + "trust a private CA with --registry-ca FILE)"
            }
            // BoringSSL's texts name the source file they come from: keep the line about the registry.
            let cut = text.range(of: " at /").map { String(text[..<$0.lowerBound]) } ?? text
            return "TLS: " + (cut.count > 200 ? String(cut.prefix(200)) + "…" : cut)
        }
        let text = "\(error)"
        return text.count > 200 ? String(text.prefix(200)) + "…" : text
    }

    /// `scheme://host[:port]` of a URL, the unit credentials are bound to.
    static func origin(of url: String) -> String? {
        guard let scheme = URL(string: url)?.scheme, let host = Self.host(of: url) else { return nil }
        return scheme.lowercased() + "://" + host
    }

    /// `host[:port]` of a URL (IPv6 literals in brackets).
    static func host(of url: String) -> String? {
        guard let components = URLComponents(string: url), let host = components.host else { return nil }
        let shown = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return components.port.map { "\(shown):\($0)" } ?? shown
    }

    static func discard(_ response: HTTPClientResponse) async {
        _ = try? await response.body.collect(upTo: 64 << 10)
    }
}

/// What one client learns while it runs: each host's origin (scheme), each registry's credential, the
/// Authorization value for each repository, and the repositories it pushes to. Kept in memory for one build
/// only, never written.
actor RegistrySession {
    private var origins: [String: String] = [:]
    private var authorizations: [String: String] = [:]
    private var pushing: Set<String> = []
    private var credentials: [String: RegistryCredential?] = [:]
    private var authentications: [String: Task<Bool, any Error>] = [:]
    private var lookups: [String: Task<RegistryCredential?, any Error>] = [:]

    func origin(host: String) -> String? { origins[host] }
    func setOrigin(_ origin: String, host: String) { origins[host] = origin }
    func authorization(host: String, repository: String) -> String? { authorizations[host + "/" + repository] }
    func setAuthorization(_ value: String, host: String, repository: String) {
        authorizations[host + "/" + repository] = value
    }
    /// The credential found for `registry` (`.some(nil)`: none, anonymous), or nil when not looked up yet.
    func credential(registry: String) -> RegistryCredential?? { credentials[registry] }
    func setCredential(_ credential: RegistryCredential?, registry: String) { credentials[registry] = credential }
    func setPushing(host: String, repository: String) { pushing.insert(host + "/" + repository) }

    /// Runs `work` once for `key` at a time; a caller that comes while it runs gets its result. Uploads at
    /// once that meet the same challenge fetch one token between them.
    func authenticateOnce(_ key: String, _ work: @escaping @Sendable () async throws -> Bool) async throws -> Bool {
        if let running = authentications[key] { return try await running.value }
        let task = Task { try await work() }
        authentications[key] = task
        defer { authentications[key] = nil }
        return try await task.value
    }

    /// The credential for `registry`, looked up by `lookup` once for the client's whole life (a credential
    /// helper runs once, however many requests meet challenges at the same time).
    func credentialOnce(
        registry: String, _ lookup: @escaping @Sendable () async throws -> RegistryCredential?
    ) async throws -> RegistryCredential? {
        if let known = credentials[registry] { return known }
        if let running = lookups[registry] { return try await running.value }
        let task = Task { try await lookup() }
        lookups[registry] = task
        defer { lookups[registry] = nil }
        let found = try await task.value
        credentials[registry] = .some(found)
        return found
    }
    func isPushing(host: String, repository: String) -> Bool { pushing.contains(host + "/" + repository) }
}
