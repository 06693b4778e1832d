import Testing

@testable import Hermetic

@Suite struct SystemErrorTests {
    @Test func longPathsAreShortenedInTheOneLine() {
        let long = "/w/" + String(repeating: "d/", count: 1000) + "end"
        let text = SystemError("lstat", path: long, errno: 36).description
        #expect(text.hasPrefix("lstat /w/d/d/"))
        #expect(text.contains("…(2006 bytes)…"))
        #expect(text.hasSuffix("d/end: File name too long"))
        #expect(text.utf8.count < 400)
        #expect(SystemError("open", path: "/short", errno: 2).description == "open /short: No such file or directory")
    }
}
