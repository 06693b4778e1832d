import Foundation

/// A user name and secret for one registry. Its description never shows the secret (nor the name), so
/// no error, log line or provenance can carry it by accident.
public struct RegistryCredential: Sendable, Hashable, CustomStringConvertible {
    public var username: String
    public var secret: String
    public var description: String { "<credentials>" }

    /// `Basic base64(user:secret)`.
    var basicAuthorization: String {
        "Basic " + Data("\(username):\(secret)".utf8).base64EncodedString()
    }
}

/// Finds credentials as docker does: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; a
/// `credHelpers` entry for the registry, else `credsStore`, runs `docker-credential-NAME get` with the
/// server address on its standard input; else an `auths` entry (`auth`, base64 `user:password`, or
/// `username` and `password`). Docker Hub's entries are keyed `https://index.docker.io/v1/`.
public struct DockerCredentialStore: Sendable {
    public struct ConfigError: HermeticError {
        public var path: String
        public var reason: String
        public var description: String { "\(path): \(reason)" }
    }

    struct Config: Decodable {
        struct Auth: Decodable {
            var auth: String?
            var username: String?
            var password: String?
        }
        var auths: [String: Auth]?
        var credsStore: String?
        var credHelpers: [String: String]?
    }

    let configPath: String?
    let config: Config?
    let searchPath: String

    /// Reads the config file the environment names (a missing file means no credentials).
    public init(environment: [String: String]) throws {
        let directory =
            environment["DOCKER_CONFIG"].flatMap { $0.isEmpty ? nil : $0 }
            ?? environment["HOME"].map { $0 + "/.docker" }
        searchPath = environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        guard let directory, FileSystem.exists(directory + "/config.json") else {
            configPath = nil
            config = nil
            return
        }
        let path = directory + "/config.json"
        configPath = path
        do {
            let bytes = try FileSystem.readFile(path, limit: 4 << 20)
            config = try JSONDecoder().decode(Config.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw ConfigError(path: path, reason: "not a valid docker config file (\(Self.brief(error)))")
        } catch {
            throw ConfigError(path: path, reason: "cannot be read: \(error)")
        }
    }

    /// The key docker uses for a registry: Docker Hub's legacy index URL, else the host.
    static func serverAddress(for registry: String) -> String {
        registry == "docker.io" ? "https://index.docker.io/v1/" : registry
    }

    /// The host an `auths` key names (`https://host/v1/` → `host`; Docker Hub's names → `docker.io`).
    static func normalizedKey(_ key: String) -> String {
        var text = Substring(key)
        for scheme in ["https://", "http://"] where text.hasPrefix(scheme) { text = text.dropFirst(scheme.count) }
        if let slash = text.firstIndex(of: "/") { text = text[..<slash] }
        let host = String(text)
        return ["index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"].contains(host)
            ? "docker.io" : host
    }

    /// The credential for `registry` (`docker.io`, `HOST[:PORT]`), or nil for anonymous access.
    public func credential(for registry: String) throws -> RegistryCredential? {
        guard let config, let configPath else { return nil }
        let helper = config.credHelpers?.first { Self.normalizedKey($0.key) == registry }?.value ?? config.credsStore
        if let helper, !helper.isEmpty {
            return try runHelper(helper, registry: registry, configPath: configPath)
        }
        guard let entry = config.auths?.first(where: { Self.normalizedKey($0.key) == registry })?.value else {
            return nil
        }
        if let auth = entry.auth, !auth.isEmpty {
            guard let decoded = Data(base64Encoded: auth).map({ String(decoding: $0, as: UTF8.self) }),
                let colon = decoded.firstIndex(of: ":")
            else {
                throw ConfigError(
                    path: configPath, reason: "the auths entry for \(registry) is not base64 of user:password")
            }
            return RegistryCredential(
                username: String(decoded[..<colon]), secret: String(decoded[decoded.index(after: colon)...]))
        }
        if let username = entry.username, let password = entry.password {
            return RegistryCredential(username: username, secret: password)
        }
        return nil
    }

    /// `docker-credential-NAME get`: the server address in, `{"Username","Secret"}` out; "credentials not
    /// found" (or any failure to find one) is anonymous access, as docker falls back to it.
    private func runHelper(_ name: String, registry: String, configPath: String) throws -> RegistryCredential? {
        let program = "docker-credential-" + name
        guard
            let executable = searchPath.split(separator: ":").map({ "\($0)/\(program)" }).first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else {
            throw ConfigError(path: configPath, reason: "the credential helper \(program) is not on PATH")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["get"]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch {
            throw ConfigError(path: configPath, reason: "the credential helper \(program) cannot be run: \(error)")
        }
        input.fileHandleForWriting.write(Data(Self.serverAddress(for: registry).utf8))
        try? input.fileHandleForWriting.close()
        let bytes = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            // Its output is not shown: a helper may print what it was given.
            return nil
        }
        struct Answer: Decodable {
            var username: String
            var secret: String
            enum CodingKeys: String, CodingKey {
                case username = "Username"
                case secret = "Secret"
            }
        }
        guard let answer = try? JSONDecoder().decode(Answer.self, from: bytes) else {
            throw ConfigError(
                path: configPath, reason: "the credential helper \(program) answered something that is not its JSON")
        }
        return RegistryCredential(username: answer.username, secret: answer.secret)
    }

    static func brief(_ error: any Error) -> String {
        let text = "\(error)"
        return text.count > 160 ? String(text.prefix(160)) + "…" : text
    }
}
