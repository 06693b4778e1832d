import Testing

@testable import Hermetic

@Suite struct DigestTests {
    @Test func hashesKnownVector() {
        #expect(
            Digest.sha256(of: Array("abc".utf8)).description
                == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            Digest.sha256(of: [UInt8]()).hex
                == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test(arguments: [
        "sha256:", "sha256:abc", "md5:" + String(repeating: "a", count: 64),
        "sha256:" + String(repeating: "A", count: 64), "sha256:../../" + String(repeating: "a", count: 58),
        String(repeating: "a", count: 64), "sha256:" + String(repeating: "a", count: 65),
    ])
    func rejectsMalformed(text: String) {
        #expect(throws: DigestError.self) { try Digest(parsing: text) }
    }

    @Test func roundTrips() throws {
        let text = "sha256:" + String(repeating: "0", count: 64)
        #expect(try Digest(parsing: text).description == text)
    }
}
