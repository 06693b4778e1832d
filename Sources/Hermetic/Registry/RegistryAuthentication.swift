import AsyncHTTPClient
import Foundation
import NIOCore

/// docker's answer to a 401: a `Basic` challenge takes the user's credentials as they are; a `Bearer`
/// challenge sends them (or nothing, for anonymous pulls) to the token service its `realm` names, asking
/// for `scope` (default `repository:NAME:pull`), and uses the token it returns.
extension RegistryClient {
    /// A parsed `WWW-Authenticate` header: the scheme and its `key="value"` parameters.
    struct Challenge: Equatable {
        var scheme: String
        var parameters: [String: String]

        init?(_ header: String) {
            let trimmed = header.trimmingCharacters(in: .whitespaces)
            guard let space = trimmed.firstIndex(of: " ") else {
                guard !trimmed.isEmpty else { return nil }
                scheme = trimmed.lowercased()
                parameters = [:]
                return
            }
            scheme = trimmed[..<space].lowercased()
            parameters = [:]
            var rest = Substring(trimmed[trimmed.index(after: space)...])
            while !rest.isEmpty {
                rest = rest.drop { $0 == " " || $0 == "," }
                guard let eq = rest.firstIndex(of: "=") else { break }
                let key = rest[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
                rest = rest[rest.index(after: eq)...]
                var value = ""
                if rest.first == "\"" {
                    rest = rest.dropFirst()
                    while let character = rest.first, character != "\"" {
                        if character == "\\", rest.count > 1 {
                            rest = rest.dropFirst()
                        }
                        if let next = rest.first { value.append(next) }
                        rest = rest.dropFirst()
                    }
                    rest = rest.dropFirst()
                } else {
                    let end = rest.firstIndex(of: ",") ?? rest.endIndex
                    value = rest[..<end].trimmingCharacters(in: .whitespaces)
                    rest = rest[end...]
                }
                parameters[key] = value
            }
        }
    }

    /// Meets a 401's challenge, so that the next request carries the Authorization it asked for; returns
    /// whether credentials went with it (false: anonymous access). `sent`: the Authorization the refused
    /// request carried. When another request has met the challenge since (the session holds another
    /// value), that one is used; requests that meet the same challenge at once share one answer.
    @discardableResult
    func authenticate(
        _ reference: RegistryReference, challenge header: String, subject: String, sent: String? = nil
    ) async throws -> Bool {
        let host = reference.endpointHost
        if let current = await session.authorization(host: host, repository: reference.repository), current != sent {
            return await session.credential(registry: reference.registry).flatMap { $0 } != nil
        }
        return try await session.authenticateOnce("\(host)/\(reference.repository) \(header)") {
            try await self.meet(reference, challenge: header, subject: subject)
        }
    }

    private func meet(_ reference: RegistryReference, challenge header: String, subject: String) async throws -> Bool {
        let registry = reference.registry
        guard let challenge = Challenge(header) else {
            throw RegistryError(
                host: registry, subject: subject, reason: "answered 401 without a WWW-Authenticate challenge")
        }
        // Looked up once for each registry (a credential helper runs once, as docker's login state is read
        // once per command), however many repositories and challenges follow.
        let credentials = self.credentials
        let credential = try await session.credentialOnce(registry: registry) {
            do {
                return try credentials.credential(for: registry)
            } catch let error as DockerCredentialStore.ConfigError {
                throw RegistryError(host: registry, subject: subject, reason: "credentials: \(error)")
            }
        }
        let loginHint = "log in with docker login \(registry == "docker.io" ? "" : registry)"
            .trimmingCharacters(in: .whitespaces)
        switch challenge.scheme {
        case "basic":
            guard let credential else {
                throw RegistryError(
                    host: registry, subject: subject,
                    reason: "the registry needs credentials (401, Basic); \(loginHint)")
            }
            await session.setAuthorization(
                credential.basicAuthorization, host: reference.endpointHost, repository: reference.repository)
            return true
        case "bearer":
            let pushing = await session.isPushing(host: reference.endpointHost, repository: reference.repository)
            let scope = Self.tokenScope(
                challenge.parameters["scope"], repository: reference.repository, pushing: pushing)
            let token = try await fetchToken(
                reference, challenge: challenge, scope: scope, credential: credential, subject: subject)
            await session.setAuthorization(
                "Bearer " + token, host: reference.endpointHost, repository: reference.repository)
            return credential != nil
        default:
            throw RegistryError(
                host: registry, subject: subject, reason: "unsupported authentication scheme \"\(challenge.scheme)\"")
        }
    }

    /// Marks `reference`'s repository as one this client pushes to: a token it asks for there asks for
    /// `pull,push` from the first challenge on, as containerd's pusher does, so one token serves the whole
    /// push (the registry's first challenge, to a `HEAD` of a blob, names only `pull`).
    func willPush(to reference: RegistryReference) async {
        await session.setPushing(host: reference.endpointHost, repository: reference.repository)
    }

    /// The scope a token is asked for: the challenge's (else `repository:REPO:pull`); for a repository this
    /// client pushes to, its own entry becomes `repository:REPO:pull,push` (other repositories' entries, as
    /// a cross-repository mount's source, stay as the challenge has them).
    static func tokenScope(_ challenged: String?, repository: String, pushing: Bool) -> String {
        let own = "repository:\(repository):"
        var scopes = (challenged ?? own + "pull").split(separator: " ").map(String.init)
        guard pushing else { return scopes.joined(separator: " ") }
        scopes.removeAll { $0.hasPrefix(own) && !$0.dropFirst(own.count).contains(":") }
        return ([own + "pull,push"] + scopes).joined(separator: " ")
    }

    /// Why a 401 came again after its challenge was met, for the one-line error: anonymous access refused
    /// (with the way to log in), a token without the scope the registry asks for (`insufficient_scope`),
    /// or credentials the registry does not take.
    static func refusedAgain(
        _ reference: RegistryReference, challenge header: String, sentCredentials: Bool, pushing: Bool = false
    ) -> String {
        let again = "authentication failed: the registry answered 401 again"
        let challenge = Challenge(header)
        guard sentCredentials else {
            let login = "docker login \(reference.registry == "docker.io" ? "" : reference.registry)"
            return again + " to anonymous access; log in with "
                + login.trimmingCharacters(in: .whitespaces)
        }
        if challenge?.parameters["error"] == "insufficient_scope" {
            let scope = challenge?.parameters["scope"].map { " (\($0))" } ?? ""
            return again + ": the credentials do not grant the access it needs\(scope), insufficient_scope"
        }
        return again + " to the credentials it asked for" + (pushing ? " (pushing needs push access)" : "")
    }

    private func fetchToken(
        _ reference: RegistryReference, challenge: Challenge, scope: String, credential: RegistryCredential?,
        subject: String
    ) async throws -> String {
        let registry = reference.registry
        guard let realm = challenge.parameters["realm"], var components = URLComponents(string: realm),
            let realmHost = URL(string: realm).flatMap({ Self.host(of: $0.absoluteString) })
        else {
            throw RegistryError(host: registry, subject: subject, reason: "a Bearer challenge without a usable realm")
        }
        // Credentials go to the token service only over TLS, or plain HTTP where the policy allows it.
        guard components.scheme == "https" || (components.scheme == "http" && policy.allowsPlainHTTP(realmHost)) else {
            throw RegistryError(
                host: registry, subject: subject, reason: "the token service \(realmHost) is not HTTPS")
        }
        var query = components.queryItems ?? []
        if let service = challenge.parameters["service"] { query.append(URLQueryItem(name: "service", value: service)) }
        // One `scope` parameter for each entry, as docker asks (a mount's token names two repositories).
        for entry in scope.split(separator: " ") { query.append(URLQueryItem(name: "scope", value: String(entry))) }
        components.queryItems = query
        guard let url = components.url?.absoluteString else {
            throw RegistryError(host: registry, subject: subject, reason: "a Bearer challenge without a usable realm")
        }
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "User-Agent", value: Self.userAgent)
        if let credential { request.headers.add(name: "Authorization", value: credential.basicAuthorization) }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .seconds(readTimeoutSeconds + 30))
        } catch {
            throw transportError(error, host: realmHost, subject: "token for \(reference.repository)")
        }
        guard response.status.code == 200 else {
            await Self.discard(response)
            let why =
                credential == nil
                ? "refused anonymous access (\(response.status.code)); log in with docker login"
                : "refused the credentials (\(response.status.code))"
            throw RegistryError(
                host: registry, subject: subject, reason: "the token service \(realmHost) \(why)",
                retryable: response.status.code == 429 || response.status.code >= 500)
        }
        let body: ByteBuffer
        do {
            body = try await response.body.collect(upTo: 1 << 20)
        } catch {
            throw RegistryError(
                host: registry, subject: subject, reason: "the token service \(realmHost) sent no usable answer")
        }
        struct TokenAnswer: Decodable {
            var token: String?
            var accessToken: String?
            enum CodingKeys: String, CodingKey {
                case token
                case accessToken = "access_token"
            }
        }
        guard let answer = try? JSONDecoder().decode(TokenAnswer.self, from: Data(body.readableBytesView)),
            let token = answer.token ?? answer.accessToken, !token.isEmpty
        else {
            throw RegistryError(
                host: registry, subject: subject, reason: "the token service \(realmHost) answered without a token")
        }
        return token
    }
}
