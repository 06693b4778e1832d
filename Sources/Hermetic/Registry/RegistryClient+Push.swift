import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
    import Glibc
#endif

/// The push side of the distribution API: any method to a path (or an upload `Location`) of the
/// reference's registry, with the same origin, authentication and transport policy as a pull. Redirects are
/// not followed here: a registry answers uploads and manifests itself.
extension RegistryClient {
    /// Sends `method` to `target` (a path below `/v2/`, or an absolute or `/`-rooted URL an upload's
    /// `Location` gave) and returns the response, its body unread, whatever its status except a 401 it
    /// answered with credentials; `body` is made again for each try (a 401 sends it twice).
    func send(
        _ method: HTTPMethod, _ reference: RegistryReference, target: String, headers: [(String, String)] = [],
        body: (() throws -> HTTPClientRequest.Body)? = nil, subject: String
    ) async throws -> HTTPClientResponse {
        let host = reference.endpointHost
        let base = try await origin(for: host, registry: reference.registry)
        let url: String
        if target.hasPrefix("http://") || target.hasPrefix("https://") {
            url = target
        } else if target.hasPrefix("/") {
            url = base + target
        } else {
            url = base + "/v2/" + target
        }
        // An upload `Location` may name another host (a storage front): credentials go only to the
        // registry's own origin, and plain HTTP only where the policy allows it for that host.
        let sameOrigin = Self.origin(of: url) == base
        if !sameOrigin {
            let other = Self.host(of: url) ?? url
            guard url.hasPrefix("https://") || (url.hasPrefix("http://") && policy.allowsPlainHTTP(other)) else {
                throw RegistryError(
                    host: reference.registry, subject: subject,
                    reason: "the registry sent the upload to \(other) in plain HTTP, which is allowed only for "
                        + "loopback registries and --insecure-registry")
            }
        }
        var authenticated = false
        var sentCredentials = false
        while true {
            var request = HTTPClientRequest(url: url)
            request.method = method
            request.headers.add(name: "User-Agent", value: Self.userAgent)
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if sameOrigin, let authorization = await session.authorization(host: host, repository: reference.repository)
            {
                request.headers.add(name: "Authorization", value: authorization)
            }
            if let body { request.body = try body() }
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, timeout: .hours(6))
            } catch {
                throw transportError(error, host: reference.registry, subject: subject)
            }
            guard response.status.code == 401, sameOrigin else { return response }
            let challenge = response.headers.first(name: "WWW-Authenticate") ?? ""
            await Self.discard(response)
            guard !authenticated else {
                throw RegistryError(
                    host: reference.registry, subject: subject,
                    reason: Self.refusedAgain(
                        reference, challenge: challenge, sentCredentials: sentCredentials, pushing: true))
            }
            sentCredentials = try await authenticate(reference, challenge: challenge, subject: subject)
            authenticated = true
        }
    }

    /// The one-line error for an answer a push did not expect: the status and the registry's first error
    /// message (`{"errors":[{"code":…,"message":…}]}`), when it sent one.
    static func unexpected(_ response: HTTPClientResponse, host: String, subject: String) async -> RegistryError {
        let code = response.status.code
        let body = try? await response.body.collect(upTo: 64 << 10)
        struct Errors: Decodable {
            struct Entry: Decodable {
                var code: String?
                var message: String?
            }
            var errors: [Entry]
        }
        var reason = "answered \(code) \(response.status.reasonPhrase)"
        if let body, let decoded = try? JSONDecoder().decode(Errors.self, from: Data(body.readableBytesView)),
            let first = decoded.errors.first
        {
            let text = [first.code, first.message].compactMap { $0 }.joined(separator: ": ")
            reason += " (\(text.count > 200 ? String(text.prefix(200)) + "…" : text))"
        }
        return RegistryError(
            host: host, subject: subject, reason: reason, retryable: code == 429 || (500...599).contains(code))
    }
}

/// A file's bytes as a request body, read 1 MiB at a time as the client sends them.
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    var path: String

    struct AsyncIterator: AsyncIteratorProtocol {
        var path: String
        var fd: Int32 = -1
        var done = false

        mutating func next() async throws -> ByteBuffer? {
            if done { return nil }
            if fd < 0 {
                fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
            }
            var bytes = [UInt8](repeating: 0, count: 1 << 20)
            let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count >= 0 else {
                let code = errno
                close(fd)
                done = true
                throw SystemError("read", path: path, errno: code)
            }
            if count == 0 {
                close(fd)
                done = true
                return nil
            }
            return ByteBuffer(bytes: bytes[0..<count])
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(path: path) }
}
