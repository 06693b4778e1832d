import Foundation
import TestSupport
import Testing

extension RunTests {
    /// A secret or ssh mount marked `required=true` that the build was not given stops the build at its
    /// line, naming the flag that gives it; without `required` the mount is skipped (see the ssh test).
    @Test(arguments: [
        ("RUN --mount=type=secret,id=tok,required=true true", "secret tok is required but was not given"),
        ("RUN --mount=type=ssh,id=agent,required=true true", "ssh agent agent is required but was not given"),
    ])
    func aRequiredMountNotGivenStopsTheBuildAtItsLine(step: String, message: String) throws {
        let build = try Build(dockerfile: "FROM busybox\n" + step + "\n")
        let outcome = try build.run()
        #expect(outcome.status == 1)
        let lines = outcome.standardError.split(separator: "\n").filter { $0.hasPrefix("error:") }
        #expect(lines.count == 1 && lines[0].contains("Dockerfile:2: " + message), "\(outcome.standardError)")
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/out"))
    }
}
