import Testing

@testable import Hermetic

/// `-t` names in index.json, as BuildKit's OCI exporter writes them (testOCILayoutMultiname).
@Suite struct ImageNameTests {
    @Test func containerdNames() {
        #expect(ImageExporter.normalizedName("org/repo:tag1") == "docker.io/org/repo:tag1")
        #expect(ImageExporter.normalizedName("repo") == "docker.io/library/repo:latest")
        #expect(ImageExporter.normalizedName("repo:1.0") == "docker.io/library/repo:1.0")
        #expect(ImageExporter.normalizedName("localhost/x") == "localhost/x:latest")
        #expect(ImageExporter.normalizedName("registry.example:5000/x/y:z") == "registry.example:5000/x/y:z")
        #expect(ImageExporter.normalizedName("ghcr.io/o/r") == "ghcr.io/o/r:latest")
        #expect(ImageExporter.ociRefName("org/repo:tag1") == "tag1")
    }
}
