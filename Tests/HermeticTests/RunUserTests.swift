import Foundation
import TestSupport
import Testing

@testable import Hermetic

/// A RUN step's uid, gid and groups as BuildKit's executor resolves them (dockerfile_test.go testUser and
/// testUserAdditionalGids).
@Suite struct RunUserTests {
    func database() throws -> (UserDatabase, TemporaryDirectory) {
        let root = try TemporaryDirectory(prefix: "users-")
        try FileManager.default.createDirectory(atPath: root.path + "/etc", withIntermediateDirectories: true)
        try """
        root:x:0:0:root:/root:/bin/sh
        dockerio:x:1001:1001::/home/dockerio:/bin/sh
        """.write(toFile: root.path + "/etc/passwd", atomically: true, encoding: .utf8)
        try """
        root:x:0:
        wheel:x:10:root
        dockerio:x:1001:
        supplementary:x:1002:dockerio
        """.write(toFile: root.path + "/etc/group", atomically: true, encoding: .utf8)
        return (try UserDatabase(root: root.path), root)
    }

    @Test func asBuildKitsExecutor() throws {
        let (users, root) = try database()
        _ = root
        func resolved(_ spec: String) throws -> String {
            let (uid, gid, groups) = try users.resolveUser(spec)
            return "\(uid):\(gid) \(groups.map(String.init).joined(separator: ","))"
        }
        #expect(try resolved("") == "0:0 0,10")  // no USER is root, with root's groups
        #expect(try resolved("root") == "0:0 0,10")
        #expect(try resolved("dockerio") == "1001:1001 1001,1002")
        #expect(try resolved("1001") == "1001:1001 1001,1002")
        #expect(try resolved("dockerio:dockerio") == "1001:1001 1001")  // a group given: no supplementary
        #expect(try resolved("1001:1001") == "1001:1001 1001")
        #expect(try resolved("1234") == "1234:0 0")
        #expect(try resolved("1234:5") == "1234:5 5")
        #expect(throws: (any Error).self) { try users.resolveUser("nobody-here") }
    }

    @Test func noPasswdFileIsRootForNoUser() throws {
        let root = try TemporaryDirectory(prefix: "users-empty-")
        let users = try UserDatabase(root: root.path)
        #expect(try users.resolveUser("") == (0, 0, [0]))
    }
}
