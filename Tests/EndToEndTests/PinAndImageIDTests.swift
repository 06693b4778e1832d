import Foundation
import Hermetic
import Provenance
import TestSupport
import Testing

/// A lock pin that the layout does not hold names the lock file and the line.
@Suite(.serialized) struct PinAndImageIDTests {
    @Test func aStaleLockPinNamesTheLockFileAndTheLine() throws {
        let scratch = try TemporaryDirectory(prefix: "stale-lock-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try "FROM base\nCOPY app.txt /app.txt\n".write(
            toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        try "app\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
        // The lock is made against one layout; the build is given another, which lacks the pinned image.
        let old = scratch.path + "/old"
        let current = scratch.path + "/current"
        let pinned = try BaseImages.writeGoldenBase(at: old)
        _ = try BaseImages.writeBusybox(at: current)
        let locked = try HermeticProcess.hermetic([
            "lock", context, "--build-context", "base=oci-layout://\(old)",
        ])
        try #require(locked.status == 0, "\(locked.standardError)")
        let built = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--build-context", "base=oci-layout://\(current)",
            "-o", "type=oci,dest=\(scratch.path)/image",
        ])
        #expect(built.status == 1)
        #expect(
            built.standardError
                == "error: Dockerfile:1: image \"base\": \(context)/hermetic.lock pins \(pinned) but oci-layout://\(current) does not hold it (run hermetic lock again)\n",
            "\(built.standardError)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/image"))

        // A pin in the --build-context value is named as such, without the hint to lock again.
        let pinnedByContext = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--build-context", "base=oci-layout://\(current)@\(pinned)",
            "-o", "type=oci,dest=\(scratch.path)/image",
        ])
        #expect(pinnedByContext.status == 1)
        #expect(
            pinnedByContext.standardError
                == "error: Dockerfile:1: image \"base\": --build-context pins \(pinned) but oci-layout://\(current) does not hold it\n",
            "\(pinnedByContext.standardError)")
    }
}
