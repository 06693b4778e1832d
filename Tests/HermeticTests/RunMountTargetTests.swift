import Testing

@testable import Hermetic

/// Where a RUN mount lands and how a cache mount is named, as BuildKit's dispatchRunMounts does it.
@Suite struct RunMountTargetTests {
    /// No `target=` is no longer an error: the target is empty, and a cache mount's id is `.`.
    @Test func mountsWithoutTargetParse() throws {
        #expect(try RunMount.parse("from=binary") == .bind(target: "", source: "/", from: "binary", readWrite: false))
        #expect(try RunMount.parse("type=tmpfs") == .tmpfs(target: "", sizeBytes: 64 << 20))
        guard case .cache(let target, let id, _, _, _, _, _, _) = try RunMount.parse("type=cache") else {
            Issue.record("type=cache did not parse as a cache mount")
            return
        }
        #expect(target == "" && id == ".")
    }

    @Test(arguments: [
        ("/var/cache/apt/", "/var/cache/apt"), ("go/pkg//mod", "go/pkg/mod"), ("a/../../b", "../b"),
        ("/../x", "/x"), ("./", "."), ("", "."),
    ])
    func cacheIDIsTheCleanedTarget(target: String, id: String) throws {
        guard case .cache(_, let parsedID, _, _, _, _, _, _) = try RunMount.parse("type=cache,target=\(target)") else {
            Issue.record("not a cache mount")
            return
        }
        #expect(parsedID == id)
    }

    @Test(arguments: [
        ("", "/src", "/src"), (".", "/src", "/src"), ("out", "/src", "/src/out"), ("../x/", "/src", "/x"),
        ("/abs/./p/", "/src", "/abs/p"),
    ])
    func targetJoinsTheWorkingDirectory(target: String, workingDirectory: String, point: String) throws {
        #expect(try RunMount.mountPoint(target, workingDirectory: workingDirectory) == point)
    }

    @Test(arguments: [("", "/"), ("/", "/src"), ("..", "/src"), ("/./", "/")])
    func aTargetOfTheRootIsRefused(target: String, workingDirectory: String) {
        #expect(throws: RunMount.ParseError.self) {
            try RunMount.mountPoint(target, workingDirectory: workingDirectory)
        }
    }
}
