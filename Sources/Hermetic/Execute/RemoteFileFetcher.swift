import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// `ADD <url> <dest>`: the only network access a build makes, and only for a file the Dockerfile pins with
/// `--checksum=sha256:…`. The bytes are streamed to a staging file while hashed, and refused unless the
/// digest matches; the file is then an ordinary input, as hermetic as the context.
struct RemoteFileFetcher {
    static let maximumSize: Int64 = 8 << 30

    struct FetchError: HermeticError {
        var url: String
        var reason: String
        var description: String { "ADD \(url): \(reason)" }
    }

    /// Downloads `url` into `stagingDirectory`; returns the staged file's path and size.
    func fetch(_ url: String, checksum: Digest, stagingDirectory: String) async throws -> (path: String, size: Int64) {
        guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(),
            ["http", "https"].contains(scheme)
        else {
            throw FetchError(url: url, reason: "only http and https URLs can be fetched")
        }
        let configuration = URLSessionConfiguration.ephemeral
        configuration.urlCache = nil
        configuration.httpCookieStorage = nil
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        let session = URLSession(configuration: configuration)
        let (downloaded, response): (URL, URLResponse)
        do {
            (downloaded, response) = try await session.download(from: parsed)
        } catch {
            throw FetchError(url: url, reason: "download failed: \(error.localizedDescription)")
        }
        defer { try? FileManager.default.removeItem(at: downloaded) }
        if let http = response as? HTTPURLResponse, !(200..<300).contains(http.statusCode) {
            throw FetchError(url: url, reason: "the server answered HTTP \(http.statusCode)")
        }
        let staged = stagingDirectory + "/remote-" + checksum.hex
        let hasher = SHA256Hasher()
        guard let input = FileHandle(forReadingAtPath: downloaded.path) else {
            throw FetchError(url: url, reason: "the downloaded file cannot be read")
        }
        defer { try? input.close() }
        guard FileManager.default.createFile(atPath: staged, contents: nil),
            let output = FileHandle(forWritingAtPath: staged)
        else {
            throw FetchError(url: url, reason: "cannot create \(staged)")
        }
        var size: Int64 = 0
        do {
            defer { try? output.close() }
            while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
                size += Int64(chunk.count)
                guard size <= Self.maximumSize else {
                    throw FetchError(url: url, reason: "larger than \(Self.maximumSize) bytes")
                }
                chunk.withUnsafeBytes { hasher.update($0) }
                try output.write(contentsOf: chunk)
            }
        } catch {
            unlink(staged)
            throw error
        }
        let actual = hasher.finalize()
        guard actual == checksum else {
            unlink(staged)
            throw FetchError(
                url: url, reason: "checksum mismatch: --checksum says \(checksum), the content is \(actual)")
        }
        return (staged, size)
    }

    /// The file name BuildKit gives a URL source when the destination is a directory: the last path segment,
    /// or `__unnamed__` when the path has none (convert_copy.go).
    static func fileName(of url: String) -> String {
        let name = URL(string: url)?.lastPathComponent ?? ""
        return name.isEmpty || name == "/" || name == "." ? "__unnamed__" : name
    }
}
