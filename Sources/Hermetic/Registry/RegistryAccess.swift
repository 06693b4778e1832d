import Foundation

/// How a command reaches registries (a build's push and cache, `inspect`, `verify`, `rebuild`): `--registry-ca`, `--insecure-registry`, and the
/// environment docker's credentials (`DOCKER_CONFIG`, `HOME`) and `HERMETIC_REGISTRY_TIMEOUT` come from.
public struct RegistryAccess: Sendable {
    public var transport: RegistryTransportPolicy
    public var environment: [String: String]

    public init(transport: RegistryTransportPolicy, environment: [String: String]) {
        self.transport = transport
        self.environment = environment
    }

    /// A client with docker's credentials and `HERMETIC_REGISTRY_TIMEOUT`; `registry` is named in errors.
    func makeClient(registry: String) throws -> RegistryClient {
        let credentials: DockerCredentialStore
        do {
            credentials = try DockerCredentialStore(environment: environment)
        } catch let error as DockerCredentialStore.ConfigError {
            throw RegistryError(host: registry, subject: "", reason: "credentials: \(error)")
        }
        let timeout = environment["HERMETIC_REGISTRY_TIMEOUT"].flatMap { Int64($0) }.flatMap { $0 > 0 ? $0 : nil }
        return try RegistryClient(policy: transport, credentials: credentials, readTimeoutSeconds: timeout ?? 60)
    }
}
