import Foundation
import Testing

@testable import Hermetic

/// Registry references normalized as docker's reference package does, which hosts may be spoken to in
/// plain HTTP, how `WWW-Authenticate` challenges and config.json keys are read.
@Suite struct RegistryNamesTests {
    @Test func referencesAreNormalizedAsDockerDoes() throws {
        let digest = try Digest(parsing: "sha256:" + String(repeating: "0f", count: 32))
        func parsed(_ text: String) throws -> RegistryReference { try RegistryReference(parsing: text) }
        #expect(try parsed("debian") == RegistryReference(registry: "docker.io", repository: "library/debian"))
        #expect(
            try parsed("debian:12@\(digest)")
                == RegistryReference(registry: "docker.io", repository: "library/debian", tag: "12", digest: digest))
        #expect(try parsed("user/app:1").description == "docker.io/user/app:1")
        #expect(try parsed("index.docker.io/library/debian").name == "docker.io/library/debian")
        #expect(try parsed("docker.io/debian").name == "docker.io/library/debian")
        #expect(try parsed("debian").endpointHost == "registry-1.docker.io")
        #expect(try parsed("localhost/app").registry == "localhost")
        #expect(try parsed("127.0.0.1:5000/a/b@\(digest)").endpointHost == "127.0.0.1:5000")
        #expect(try parsed("ghcr.io/o/r:v1").repository == "o/r")
        #expect(try parsed("[::1]:5000/app").registry == "[::1]:5000")
        #expect(throws: RegistryReference.ParseError.self) { try parsed("Debian") }
        #expect(throws: RegistryReference.ParseError.self) { try parsed("debian@sha256:abc") }
    }

    @Test func plainHTTPOnlyForLoopbackAndInsecureRegistries() {
        let policy = RegistryTransportPolicy(insecureRegistries: ["registry.lan:5000", "plain.example"])
        #expect(policy.allowsPlainHTTP("127.0.0.1:5000"))
        #expect(policy.allowsPlainHTTP("127.8.9.10"))
        #expect(policy.allowsPlainHTTP("[::1]:5000"))
        #expect(policy.allowsPlainHTTP("localhost:5000"))
        #expect(policy.allowsPlainHTTP("registry.lan:5000"))
        #expect(!policy.allowsPlainHTTP("registry.lan:5001"))
        #expect(policy.allowsPlainHTTP("plain.example:443"))
        #expect(!policy.allowsPlainHTTP("128.0.0.1:5000"))
        #expect(!policy.allowsPlainHTTP("127.0.0.1.example.com"))
        #expect(!policy.allowsPlainHTTP("docker.io"))
    }

    @Test func challengesAreParsed() {
        let bearer = RegistryClient.Challenge(
            #"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#
        )
        #expect(bearer?.scheme == "bearer")
        #expect(
            bearer?.parameters == [
                "realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                "scope": "repository:library/debian:pull",
            ])
        #expect(
            RegistryClient.Challenge(#"Basic realm="a \"quoted\" realm""#)?.parameters["realm"] == #"a "quoted" realm"#)
        #expect(RegistryClient.Challenge("Basic")?.parameters == [:])
        #expect(RegistryClient.Challenge("") == nil)
    }

    @Test func dockerConfigKeysAreComparedByHost() {
        #expect(DockerCredentialStore.normalizedKey("https://index.docker.io/v1/") == "docker.io")
        #expect(DockerCredentialStore.normalizedKey("registry-1.docker.io") == "docker.io")
        #expect(DockerCredentialStore.normalizedKey("http://127.0.0.1:5000/v2/") == "127.0.0.1:5000")
        #expect(DockerCredentialStore.normalizedKey("ghcr.io") == "ghcr.io")
        #expect(DockerCredentialStore.serverAddress(for: "docker.io") == "https://index.docker.io/v1/")
        #expect(RegistryCredential(username: "u", secret: "s3cret").description == "<credentials>")
    }
}
