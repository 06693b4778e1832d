import Foundation
import Hermetic
import TestSupport
import Testing

/// A builder SIGKILLed between making its workspace (`.hermetic-new-…`) and renaming it into place leaves
/// it under that name; a later build removes it once it is an hour old and not locked, never a fresh one.
@Suite struct StaleStagingTests {
    @Test func anHourOldStagingWorkspaceGoesAFreshOneStays() throws {
        let scratch = try TemporaryDirectory(prefix: "stale-staging-")
        let temporary = scratch.path + "/tmp"
        let fm = FileManager.default
        for name in [".hermetic-new-old-owner", ".hermetic-new-old-bare", ".hermetic-new-fresh"] {
            try fm.createDirectory(atPath: temporary + "/" + name, withIntermediateDirectories: true)
        }
        _ = fm.createFile(atPath: temporary + "/.hermetic-new-old-owner/.owner", contents: nil)
        _ = fm.createFile(atPath: temporary + "/.hermetic-new-fresh/.owner", contents: nil)
        let twoHoursAgo = Date(timeIntervalSinceNow: -7200)
        for name in [".hermetic-new-old-owner", ".hermetic-new-old-bare"] {
            try fm.setAttributes([.modificationDate: twoHoursAgo], ofItemAtPath: temporary + "/" + name)
        }
        try fm.createDirectory(atPath: scratch.path + "/ctx", withIntermediateDirectories: true)
        try "FROM scratch\nLABEL a=b\n".write(
            toFile: scratch.path + "/ctx/Dockerfile", atomically: true, encoding: .utf8)
        let outcome = try HermeticProcess.hermetic(
            ["build", scratch.path + "/ctx", "--progress", "quiet"],
            environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": temporary])
        #expect(outcome.status == 0, "\(outcome.standardError)")
        let left = try fm.contentsOfDirectory(atPath: temporary).sorted()
        #expect(left == [".hermetic-new-fresh"], "\(left)")
    }
}
