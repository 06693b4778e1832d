import Testing

@testable import Hermetic

/// What an `ADD <url> DIR/` names the file, as BuildKit does.
@Suite struct RemoteFileNameTests {
    @Test func lastPathSegmentOrUnnamed() {
        #expect(RemoteFileFetcher.fileName(of: "https://example.com/a/b.tar.gz") == "b.tar.gz")
        #expect(RemoteFileFetcher.fileName(of: "https://example.com/a/b.txt?x=1") == "b.txt")
        #expect(RemoteFileFetcher.fileName(of: "https://example.com/") == "__unnamed__")
        #expect(RemoteFileFetcher.fileName(of: "https://example.com") == "__unnamed__")
    }
}
