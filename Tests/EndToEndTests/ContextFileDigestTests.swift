import Foundation
import Hermetic
import TestSupport
import Testing

/// The build context's file digests are remembered in the store by each file's stat (SPEC §10, "Context
/// file digests"): a file whose device, inode, size, mtime and ctime match is not read again; any change
/// moves its ctime, and a file changed less than two seconds before it was read is never remembered.
@Suite struct ContextFileDigestTests {
    static let dockerfile = "FROM busybox\nCOPY big.txt /big.txt\n"

    /// The table's lines for the context (one per file the build read: the Dockerfile, big.txt):
    /// `DEV INO SIZE MTIME CTIME SHA256HEX`; only those of `file` when given.
    static func table(_ build: ProgressTests.Build, of file: String? = nil) throws -> [[String]] {
        let directory = build.scratch.path + "/state/store/context-digests"
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        try #require(names.count == 1, "\(names)")
        let text = try String(contentsOfFile: directory + "/" + names[0], encoding: .utf8)
        let lines = text.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        try #require(lines.first == ["hermetic", "context", "digests", "1"], "\(text)")
        let inode = try file.map(Self.inode)
        return lines.dropFirst().filter { inode == nil || $0.count > 1 && $0[1] == inode }
    }

    static func inode(_ path: String) throws -> String {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        return String(describing: attributes[.systemFileNumber] ?? "")
    }

    static func cachedCopy(_ outcome: HermeticProcess.Outcome) -> Bool {
        let lines = outcome.standardError.split(separator: "\n")
        guard let start = lines.firstIndex(where: { $0.hasSuffix("COPY big.txt /big.txt") }) else { return false }
        return lines[start...].contains { $0.hasSuffix(" CACHED") }
    }

    @Test func aFileReadOnceIsRememberedAndAChangeIsSeen() throws {
        let build = try ProgressTests.Build(Self.dockerfile, files: ["big.txt": "first contents\n"])
        let file = build.context + "/big.txt"
        // Older than the racy window, so the first build may remember it.
        Thread.sleep(forTimeInterval: 2.2)
        let first = try build.run(["--progress", "plain"])
        try #require(first.status == 0, "\(first.standardError)")
        #expect(try Self.table(build).count == 2)
        let lines = try Self.table(build, of: file)
        try #require(lines.count == 1, "\(lines)")
        #expect(lines[0][5] == Digest.sha256(of: Array("first contents\n".utf8)).hex)

        // The table is what the next build trusts: a digest put there by hand changes the step's key.
        var forged = lines[0]
        forged[5] = Digest.sha256(of: Array("forged\n".utf8)).hex
        let tablePath = try FileManager.default.contentsOfDirectory(
            atPath: build.scratch.path + "/state/store/context-digests"
        ).map { build.scratch.path + "/state/store/context-digests/" + $0 }[0]
        try ("hermetic context digests 1\n" + forged.joined(separator: " ") + "\n").write(
            toFile: tablePath, atomically: true, encoding: .utf8)
        let forgedRun = try build.run(["--progress", "plain"])
        try #require(forgedRun.status == 0, "\(forgedRun.standardError)")
        #expect(!Self.cachedCopy(forgedRun), "the forged digest was not used: \(forgedRun.standardError)")
        // With --no-cache the table is not read: the file is, and the table is mended.
        let mended = try build.run(["--progress", "plain", "--no-cache"])
        try #require(mended.status == 0, "\(mended.standardError)")
        #expect(try Self.table(build, of: file).first?[5] == Digest.sha256(of: Array("first contents\n".utf8)).hex)
        let again = try build.run(["--progress", "plain"])
        #expect(Self.cachedCopy(again), "\(again.standardError)")
        #expect(again.standardOutput == first.standardOutput)

        // Same size, mtime put back: the ctime moved, so the new bytes are read and the step runs.
        let modified = try FileManager.default.attributesOfItem(atPath: file)[.modificationDate] as? Date
        try "other contents\n".write(toFile: file, atomically: false, encoding: .utf8)
        if let modified { try FileManager.default.setAttributes([.modificationDate: modified], ofItemAtPath: file) }
        let changed = try build.run(["--progress", "plain"])
        try #require(changed.status == 0, "\(changed.standardError)")
        #expect(!Self.cachedCopy(changed), "\(changed.standardError)")
        #expect(changed.standardOutput != first.standardOutput)
        // Changed just now: read, but not remembered (the racy window); the Dockerfile still is.
        #expect(try Self.table(build, of: file).isEmpty)
        #expect(try Self.table(build).count == 1)
        let pruned = try HermeticProcess.hermetic(
            ["prune", "--state-dir", build.scratch.path + "/state", "--filter", "until=240h"])
        #expect(pruned.status == 0, "\(pruned.standardError)")
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/state/store/context-digests"))
    }
}
