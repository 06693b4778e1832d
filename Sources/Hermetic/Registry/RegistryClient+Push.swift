import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
    import Glibc
#endif

/// The push side of the distribution API: any method to a path (or an upload `Location`) of the
/// reference's registry, with the same origin, authentication and transport policy as a pull. Redirects are
/// followed only where the caller asks (the bytes of an upload: 307 and 308 keep the method and body, as
/// Go's client, which docker and containerd use, follows them), never for a HEAD, a POST or a manifest.
extension RegistryClient {
    /// Sends `method` to `target` (a path below `/v2/`, or an absolute or `/`-rooted URL an upload's
    /// `Location` gave) and returns the response, its body unread, whatever its status except a 401 it
    /// answered with credentials (and a 307/308 with `followRedirects`); `body` is made again for each try
    /// (a 401 or a redirect sends it twice).
    func send(
        _ method: HTTPMethod, _ reference: RegistryReference, target: String, headers: [(String, String)] = [],
        body: (() throws -> HTTPClientRequest.Body)? = nil, subject: String, followRedirects: Bool = false
    ) async throws -> HTTPClientResponse {
        let host = reference.endpointHost
        let base = try await origin(for: host, registry: reference.registry)
        var url = Self.resolve(target, base: base)
        var authenticated = false
        var redirects = 0
        var sentCredentials = false
        while true {
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
            var request = HTTPClientRequest(url: url)
            request.method = method
            request.headers.add(name: "User-Agent", value: Self.userAgent)
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            let authorization =
                sameOrigin ? await session.authorization(host: host, repository: reference.repository) : nil
            if let authorization { request.headers.add(name: "Authorization", value: authorization) }
            if let body { request.body = try body() }
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, timeout: .hours(6))
            } catch {
                // Named as the user wrote it, unless the upload went to another host.
                let named = sameOrigin ? reference.registry : Self.host(of: url) ?? reference.registry
                throw transportError(error, host: named, subject: subject)
            }
            let code = response.status.code
            if followRedirects, code == 307 || code == 308 {
                await Self.discard(response)
                redirects += 1
                url = try Self.redirectTarget(response, from: url, redirects: redirects, reference, subject)
                continue
            }
            guard code == 401, sameOrigin else { return response }
            let challenge = response.headers.first(name: "WWW-Authenticate") ?? ""
            await Self.discard(response)
            guard !authenticated else {
                throw RegistryError(
                    host: reference.registry, subject: subject,
                    reason: Self.refusedAgain(
                        reference, challenge: challenge, sentCredentials: sentCredentials, pushing: true))
            }
            sentCredentials = try await authenticate(
                reference, challenge: challenge, subject: subject, sent: authorization)
            authenticated = true
        }
    }

    /// The URL of `target`: as it is when absolute, on the registry's origin when `/`-rooted, else below
    /// `/v2/`.
    static func resolve(_ target: String, base: String) -> String {
        if target.hasPrefix("http://") || target.hasPrefix("https://") { return target }
        return target.hasPrefix("/") ? base + target : base + "/v2/" + target
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

/// A file's bytes (all of them, or `length` from `offset`: one chunk of a chunked upload) as a request
/// body, read 1 MiB at a time as the client sends them.
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    var path: String
    var offset: Int64 = 0
    var length: Int64?

    struct AsyncIterator: AsyncIteratorProtocol {
        var path: String
        var position: Int64
        var remaining: Int64?
        var fd: Int32 = -1
        var done = false

        mutating func next() async throws -> ByteBuffer? {
            if done || remaining == 0 {
                finish()
                return nil
            }
            if fd < 0 {
                fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
            }
            let wanted = Int(Swift.min(Int64(1 << 20), remaining ?? Int64(1 << 20)))
            var bytes = [UInt8](repeating: 0, count: wanted)
            let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(position)) }
            guard count >= 0 else {
                let code = errno
                finish()
                throw SystemError("read", path: path, errno: code)
            }
            if count == 0 {
                finish()
                return nil
            }
            position += Int64(count)
            remaining = remaining.map { $0 - Int64(count) }
            return ByteBuffer(bytes: bytes[0..<count])
        }

        private mutating func finish() {
            if fd >= 0 { close(fd) }
            fd = -1
            done = true
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(path: path, position: offset, remaining: length) }
}
