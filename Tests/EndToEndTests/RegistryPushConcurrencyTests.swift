import Foundation
import Hermetic
import TestSupport
import Testing

/// Blobs go up several at once (at most five, dockerd's default), and the image is whole at the end.
@Suite struct RegistryPushConcurrencyTests {
    @Test func blobsAreUploadedSeveralAtOnce() throws {
        let scratch = try TemporaryDirectory(prefix: "push-concurrent-")
        let registry = try PushRegistry(.slowClose)
        let context = try RegistryPullTests.makeContext(
            scratch,
            dockerfile: "FROM scratch\nCOPY app.txt /app.txt\nCOPY Dockerfile /Dockerfile\nCOPY app.txt /again.txt\n")
        let outcome = try RegistryPushFakeRegistryTests.push(
            context, state: scratch.path + "/state", to: "\(registry.host)/apps/many:v1")
        try #require(outcome.status == 0, "\(outcome.standardError)")
        // Seven uploads, each held half a second.
        let mostAtOnce = try String(contentsOfFile: registry.directory.path + "/most-at-once", encoding: .utf8)
        #expect((Int(mostAtOnce) ?? 0) >= 2, "uploads were one after another: \(registry.requestLog)")
        #expect(registry.tags("apps/many").contains("v1"))
        // Each blob once: the three layers, the config, the two statements and the artifacts' empty config.
        let closed = registry.requestLog.filter { $0.hasPrefix("PUT /v2/apps/many/blobs/uploads/") }
        #expect(closed.count == 7, "\(registry.requestLog)")
    }
}
