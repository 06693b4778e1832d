import AsyncHTTPClient
import Foundation
import NIOCore
import Provenance

/// How a blob goes up (OCI distribution spec, "Pushing blobs"; SPEC §1.2): a mount from another repository
/// of the registry where one is known to hold it (`POST …/blobs/uploads/?mount=DIGEST&from=REPO`: 201 is
/// done, 202 opens an upload session), else an upload session (`POST …/blobs/uploads/`). A blob up to
/// `chunkSize` (or the registry's `OCI-Chunk-Min-Length`, when larger) goes in one `PUT LOCATION?digest=`;
/// a larger one in `PATCH`es of that size, each answered with the `Range` the registry holds, resumed from
/// the registry's own `Range` after a chunk fails, and closed by `PUT LOCATION?digest=`.
extension RegistryPusher {
    /// Blobs larger than this go up in chunks of this size: a dropped connection costs one chunk, and no
    /// request body is larger than this (proxies in front of registries cap bodies).
    static let chunkSize: Int64 = 16 << 20

    enum UploadStart: Sendable {
        case mounted
        case session(location: String, minimumChunk: Int64?)
    }

    /// Mounts the blob from `mountFrom`, or opens an upload session. A mount the registry cannot make
    /// (202: a session to upload into; 404, 403 or a token without pull access to `mountFrom`: a new
    /// session) falls back to an upload.
    func startUpload(_ descriptor: Descriptor, mountFrom: String?, subject what: String) async throws -> UploadStart {
        let uploads = "\(reference.repository)/blobs/uploads/"
        if let mountFrom {
            let from = mountFrom.addingPercentEncoding(withAllowedCharacters: Self.unreserved) ?? mountFrom
            var answer: HTTPClientResponse?
            do {
                answer = try await client.send(
                    .POST, reference, target: uploads + "?mount=\(descriptor.digest)&from=\(from)",
                    headers: [("Content-Length", "0")], subject: what)
            } catch let error as RegistryError where !error.retryable {
                answer = nil
            }
            if let answer {
                switch answer.status.code {
                case 201:
                    try checkStoredDigest(answer, descriptor, subject: what)
                    await RegistryClient.discard(answer)
                    return .mounted
                case 202:
                    return try await session(answer, subject: what)
                default:
                    await RegistryClient.discard(answer)
                }
            }
        }
        let started = try await client.send(
            .POST, reference, target: uploads, headers: [("Content-Length", "0")], subject: what)
        guard started.status.code == 202 else {
            throw await RegistryClient.unexpected(started, host: reference.registry, subject: what)
        }
        return try await session(started, subject: what)
    }

    private func session(_ answer: HTTPClientResponse, subject what: String) async throws -> UploadStart {
        await RegistryClient.discard(answer)
        guard let location = answer.headers.first(name: "Location"), !location.isEmpty else {
            throw RegistryError(
                host: reference.registry, subject: what, reason: "answered 202 without a Location to upload to")
        }
        let minimum = answer.headers.first(name: "OCI-Chunk-Min-Length").flatMap { Int64($0) }.flatMap {
            $0 > 0 ? $0 : nil
        }
        return .session(location: location, minimumChunk: minimum)
    }

    /// One `PUT LOCATION?digest=` with the whole blob.
    func uploadWhole(_ descriptor: Descriptor, from source: BlobSource, to location: String, subject what: String)
        async throws
    {
        let done = try await client.send(
            .PUT, reference, target: Self.withDigest(location, descriptor.digest),
            headers: [("Content-Type", "application/octet-stream"), ("Content-Length", String(descriptor.size))],
            body: { source.body(offset: 0, length: descriptor.size) }, subject: what, followRedirects: true)
        try await closed(done, descriptor, subject: what)
    }

    /// `PATCH`es of `chunk` bytes from where the registry says it holds the blob up to, then the closing
    /// `PUT`. A chunk that fails (a dropped connection, 416, 429, 5xx) is asked after (`GET LOCATION`, whose
    /// `Range` says what the registry holds) and sent again from there, up to `RegistryClient.attempts`
    /// times in a row; a session the status shows gone is started again. A `Range` that goes back before
    /// what the registry acknowledged, or past what was sent, fails the push.
    func uploadInChunks(
        _ descriptor: Descriptor, from source: BlobSource, to start: String, chunk: Int64, subject what: String
    ) async throws {
        var location = start
        var held: Int64 = 0
        var failures = 0
        while held < descriptor.size {
            let from = held
            let end = min(from + chunk, descriptor.size)
            do {
                let answer = try await client.send(
                    .PATCH, reference, target: location,
                    headers: [
                        ("Content-Type", "application/octet-stream"), ("Content-Range", "\(from)-\(end - 1)"),
                        ("Content-Length", String(end - from)),
                    ],
                    body: { source.body(offset: from, length: end - from) }, subject: what, followRedirects: true)
                guard answer.status.code == 202 else {
                    var error = await RegistryClient.unexpected(answer, host: reference.registry, subject: what)
                    if answer.status.code == 416 { error.retryable = true }  // out of step: ask where it stands
                    throw error
                }
                await RegistryClient.discard(answer)
                held = try heldBytes(answer, acknowledged: from, sent: end, subject: what)
                location = answer.headers.first(name: "Location") ?? location
                guard held > from else {
                    throw RegistryError(
                        host: reference.registry, subject: what, reason: "took none of a chunk", retryable: true)
                }
                failures = 0
            } catch var error as RegistryError where error.retryable {
                failures += 1
                guard failures < RegistryClient.attempts else {
                    error.reason += " (after \(failures) tries)"
                    error.retryable = false
                    throw error
                }
                try await Task.sleep(nanoseconds: 500_000_000 << (failures - 1))
                let status = try await client.send(.GET, reference, target: location, subject: what)
                guard status.status.code == 204 else {
                    // The session is gone (distribution 2.8 cancels an upload whose size is not what its
                    // `_state` says): the blob goes up again in a new one (`withRetries` in `pushBlob`).
                    var error = await RegistryClient.unexpected(status, host: reference.registry, subject: what)
                    error.retryable = true
                    throw error
                }
                await RegistryClient.discard(status)
                held = try heldBytes(status, acknowledged: from, sent: end, subject: what)
                location = status.headers.first(name: "Location") ?? location
            }
        }
        let done = try await client.send(
            .PUT, reference, target: Self.withDigest(location, descriptor.digest), headers: [("Content-Length", "0")],
            subject: what, followRedirects: true)
        try await closed(done, descriptor, subject: what)
    }

    /// The bytes the registry holds by its answer's `Range: 0-END` (distribution also writes `bytes=0-END`,
    /// and `0-0` for an empty upload): at least `acknowledged`, at most `sent`.
    private func heldBytes(_ answer: HTTPClientResponse, acknowledged: Int64, sent: Int64, subject what: String) throws
        -> Int64
    {
        let range = answer.headers.first(name: "Range") ?? ""
        var text = Substring(range.trimmingCharacters(in: .whitespaces))
        if text.hasPrefix("bytes=") { text = text.dropFirst("bytes=".count) }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0] == "0", let last = Int64(parts[1]), last >= 0 else {
            throw RegistryError(
                host: reference.registry, subject: what,
                reason: "answered an upload without a usable Range (\"\(range)\")")
        }
        let held = last == 0 && acknowledged == 0 ? 0 : last + 1
        guard held >= acknowledged else {
            throw RegistryError(
                host: reference.registry, subject: what,
                reason: "its upload Range (\(range)) goes back before the \(acknowledged) bytes it acknowledged")
        }
        guard held <= sent else {
            throw RegistryError(
                host: reference.registry, subject: what,
                reason: "its upload Range (\(range)) claims more than the \(sent) bytes sent")
        }
        return held
    }

    /// The answer to the `PUT` that ends an upload: 201, and the digest the registry says it stored (if it
    /// says) the blob's.
    private func closed(_ answer: HTTPClientResponse, _ descriptor: Descriptor, subject what: String) async throws {
        guard answer.status.code == 201 else {
            throw await RegistryClient.unexpected(answer, host: reference.registry, subject: what)
        }
        try checkStoredDigest(answer, descriptor, subject: what)
        await RegistryClient.discard(answer)
    }

    /// A `Docker-Content-Digest` in sha256 must be the blob's (the spec lets a registry answer in another
    /// algorithm).
    private func checkStoredDigest(_ answer: HTTPClientResponse, _ descriptor: Descriptor, subject what: String) throws
    {
        guard let stated = answer.headers.first(name: "Docker-Content-Digest")?.trimmingCharacters(in: .whitespaces),
            stated.lowercased().hasPrefix("sha256:"), stated != descriptor.digest.description
        else { return }
        throw RegistryError(
            host: reference.registry, subject: what,
            reason: "the registry says it stored \(stated.count > 80 ? String(stated.prefix(80)) + "…" : stated), "
                + "not the blob's digest")
    }

    static func withDigest(_ location: String, _ digest: Digest) -> String {
        location + (location.contains("?") ? "&" : "?") + "digest=" + digest.description
    }

    private static let unreserved = CharacterSet(
        charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
}

extension RegistryPusher.BlobSource {
    /// `length` bytes from `offset` as a request body.
    func body(offset: Int64, length: Int64) -> HTTPClientRequest.Body {
        switch self {
        case .file(let path):
            return .stream(FileChunks(path: path, offset: offset, length: length), length: .known(length))
        case .bytes(let bytes):
            let lower = min(Int(offset), bytes.count)
            return .bytes(Array(bytes[lower..<min(lower + Int(length), bytes.count)]))
        }
    }
}
