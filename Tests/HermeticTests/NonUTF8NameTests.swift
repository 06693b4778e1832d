import Foundation
import Testing

@testable import Hermetic

/// Names that are not valid UTF-8 are never dropped silently: what cannot go into a layer (format 1
/// stores UTF-8 names) is refused by name, and what the builder removes goes whatever its name.
@Suite struct NonUTF8NameTests {
    static let cafe: [UInt8] = [0x63, 0x61, 0x66, 0xe9]  // "caf" + Latin-1 é

    func cPath(_ bytes: [UInt8]) -> [CChar] { bytes.map { CChar(bitPattern: $0) } + [0] }

    func makeFile(_ directory: String, _ name: [UInt8]) throws {
        let fd = open(cPath(Array(directory.utf8) + [UInt8(ascii: "/")] + name), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
        try #require(fd >= 0)
        close(fd)
    }

    @Test func removeTreeRemovesAnyNameAtAnyDepth() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree + "/locked", withIntermediateDirectories: true)
        try makeFile(tree, Self.cafe)
        let oddDirectory = Array((tree + "/").utf8) + Self.cafe + [0xff]
        #expect(mkdir(cPath(oddDirectory), 0o755) == 0)
        let inside = open(cPath(oddDirectory + Array("/f".utf8)), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
        #expect(inside >= 0)
        close(inside)
        try makeFile(tree + "/locked", Self.cafe)
        chmod(tree + "/locked", 0o000)
        // A chain 3000 deep: its paths pass PATH_MAX, and it holds more levels than removeTree keeps open.
        try FileManager.default.createDirectory(atPath: tree + "/chain", withIntermediateDirectories: true)
        var fd = open(tree + "/chain", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        for _ in 0..<3000 {
            #expect(mkdirat(fd, cPath(Self.cafe), 0o755) == 0)
            let next = openat(fd, cPath(Self.cafe), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            close(fd)
            fd = next
        }
        #expect(openat(fd, cPath(Self.cafe + [0xfe]), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644) >= 0)
        close(fd)
        FileSystem.removeTree(tree)
        #expect(lstatOf(tree) == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    @Test(arguments: [true, false])
    func sourceTreesNameTheFileInsteadOfDroppingIt(isBuildContext: Bool) throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        try makeFile(dir + "/sub", Self.cafe)
        try makeFile(dir, Array("ok".utf8))
        let context = BuildContext(root: dir, ignore: DockerIgnore(), isBuildContext: isBuildContext)
        do {
            _ = try context.walk([])
            Issue.record("walked past a name that is not UTF-8")
        } catch let error as BuildContext.SourceError {
            #expect(error.description.contains(#""sub/caf\xe9" in the "#), "\(error)")
            #expect(error.description.contains(isBuildContext ? "build context" : "the source"), "\(error)")
            #expect(error.description.contains("not valid UTF-8"), "\(error)")
        }
        // Excluded by .dockerignore (as decoded with U+FFFD), it is left out like any excluded file.
        let ignoring = BuildContext(
            root: dir, ignore: try DockerIgnore(text: "sub/caf*", file: ".dockerignore"), isBuildContext: true)
        #expect(try ignoring.walk([]).map { $0.relative.joined(separator: "/") } == ["ok", "sub"])
    }

    @Test func symlinkTargetsThatAreNotUTF8AreRefused() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        #expect(symlink(cPath(Self.cafe), dir + "/link") == 0)
        #expect(throws: RootedPath.ResolutionError.self) { try RootedPath.readLink(dir + "/link") }
        do {
            _ = try StepDiff().entries(ofUpperDirectory: dir, lower: "/nonexistent-lower")
            Issue.record("accepted")
        } catch let error as StepDiff.NameNotUTF8 {
            #expect(
                error.description == #"made "link", whose symlink target is not valid UTF-8 (layers store UTF-8 names)"#
            )
        }
    }

    @Test func aRunStepsNameThatIsNotUTF8IsNamed() throws {
        let upper = try makeTemporaryDirectory()
        defer { removeTree(upper) }
        try FileManager.default.createDirectory(atPath: upper + "/a/b", withIntermediateDirectories: true)
        try makeFile(upper + "/a/b", Self.cafe)
        do {
            _ = try StepDiff().entries(ofUpperDirectory: upper, lower: "/nonexistent-lower")
            Issue.record("accepted")
        } catch let error as StepDiff.NameNotUTF8 {
            #expect(
                error.description
                    == #"made "a/b/caf\xe9", whose file name is not valid UTF-8 (layers store UTF-8 names)"#)
        }
    }
}
