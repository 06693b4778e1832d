import Foundation
import Hermetic
import TestSupport
import Testing

extension StoreCommandTests {
    /// `store check` reads the blob source records (where pulled blobs came from, for push's mounts): a
    /// record of a blob the store lacks, or one that does not parse, is a finding that `--repair` removes;
    /// the record of a blob the store holds is left.
    @Test func storeCheckFindsBlobSourceRecordsWithoutTheirBlob() throws {
        let fixture = try Fixture()
        _ = try fixture.build("one")
        let sources = fixture.state + "/store/sources"
        try FileManager.default.createDirectory(atPath: sources, withIntermediateDirectories: true)
        let held = try #require(try fixture.blobs().first)
        let missing = Digest.sha256(of: Array("not in the store".utf8)).hex
        let record = #"{"registry.example":["team/base"]}"#
        try record.write(toFile: "\(sources)/\(held).json", atomically: true, encoding: .utf8)
        try record.write(toFile: "\(sources)/\(missing).json", atomically: true, encoding: .utf8)
        try "[1,".write(toFile: "\(sources)/\(String(held.reversed())).json", atomically: true, encoding: .utf8)

        let check = try fixture.hermetic(["store", "check"])
        #expect(check.status == 1)
        let lines = check.standardOutput.split(separator: "\n") + check.standardError.split(separator: "\n")
        #expect(lines.contains { $0.contains("\(missing).json") && $0.contains("which the store lacks") }, "\(lines)")
        #expect(lines.contains { $0.contains("not a blob source record") }, "\(lines)")
        #expect(!lines.contains { $0.contains("\(held).json") }, "\(lines)")

        let repaired = try fixture.hermetic(["store", "check", "--repair"])
        #expect(repaired.status == 0, "\(repaired.standardOutput)\(repaired.standardError)")
        #expect(repaired.standardOutput.contains("\(missing).json"), "it names what it removed")
        #expect(try FileManager.default.contentsOfDirectory(atPath: sources) == ["\(held).json"])
        let again = try fixture.hermetic(["store", "check"])
        #expect(again.status == 0, "\(again.standardOutput)\(again.standardError)")
    }
}
