import Foundation
import TestSupport
import Testing

@testable import Hermetic

/// `--chmod` symbolic modes, checked against the real chmod(1) (GNU, umask 0) on real files where GNU and
/// BSD `setmode` (BuildKit's) agree: plain permission bits. Where they differ (sticky and set-id bits
/// under `=` and copies, `o+t`, `X` judged by the mode before any clause) BSD's results are checked by value.
@Suite struct FileModeChangeTests {
    static let symbolic = [
        "u+x", "go-w", "a=r", "u=rwx,go=rx", "+x", "-w", "=", "o=", "g+s", "u+s", "o+s", "+t", "u=g", "go=u",
        "g-r,o+w", "ug+rw-x", "a+X", "u+X", "u-s,g-s", "a-rwx", "u+rwx,g+rx,o+r", "u=rw,g=r,o=",
    ]
    static let originals: [UInt32] = [0o644, 0o755, 0o600, 0o000, 0o467, 0o751]

    @Test(arguments: symbolic)
    func matchesChmodOnAFile(_ text: String) throws {
        let change = try FileModeChange.parse(text)
        let directory = try FileSystem.makeTemporaryDirectory(in: "/tmp", prefix: "chmod-oracle-")
        defer { FileSystem.removeTree(directory) }
        let path = directory + "/f"
        #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        for original in Self.originals {
            #expect(chmod(path, mode_t(original)) == 0)
            let outcome = try HermeticProcess.run("/bin/sh", ["-c", "umask 0 && exec chmod \"$0\" \"$1\"", text, path])
            try #require(outcome.status == 0, "\(outcome.standardError)")
            var info = stat()
            #expect(lstat(path, &info) == 0)
            let expected = UInt32(info.st_mode) & 0o7777
            #expect(
                change.apply(to: original, isDirectory: false) == expected,
                "\(text) on \(String(original, radix: 8)): chmod gives \(String(expected, radix: 8))")
        }
    }

    @Test func whereBSDDiffersFromGNU() throws {
        func mode(_ text: String, _ original: UInt32) throws -> UInt32 {
            try FileModeChange.parse(text).apply(to: original, isDirectory: false)
        }
        #expect(try mode("a=r", 0o1777) == 0o1444)  // `a` is not the sticky bit
        #expect(try mode("=", 0o1777) == 0o1000)
        #expect(try mode("o+t", 0o644) == 0o644)  // t for `o` alone is ignored
        #expect(try mode("u=g", 0o4755) == 0o4555)  // a copy replaces permission bits only
        #expect(try mode("go=u", 0o2711) == 0o2777)
        #expect(try mode("=rw,+X", 0o755) == 0o777)  // X looks at the mode before the first clause
        #expect(try mode("u=rwx", 0o4644) == 0o744)  // named bits under = clear the class's set-id bit
    }

    @Test func executeIfSearchable() throws {
        let plusX = try FileModeChange.parse("a+X")
        #expect(plusX.apply(to: 0o644, isDirectory: false) == 0o644)
        #expect(plusX.apply(to: 0o644, isDirectory: true) == 0o755)
        #expect(plusX.apply(to: 0o744, isDirectory: false) == 0o755)
        // As BSD setmode (BuildKit's): X means something only with +.
        #expect(try FileModeChange.parse("a-X").apply(to: 0o755, isDirectory: true) == 0o755)
        #expect(try FileModeChange.parse("a=rX").apply(to: 0o755, isDirectory: true) == 0o444)
    }

    @Test func octalAndErrors() throws {
        #expect(try FileModeChange.parse("0755") == .absolute(0o755))
        #expect(try FileModeChange.parse("7777") == .absolute(0o7777))
        for bad in ["17777", "8", "0o755", "1e3", "09"] {
            #expect(throws: FileModeChange.ParseError.notOctal, "\(bad)") { try FileModeChange.parse(bad) }
        }
        for bad in ["u", "u+q", "x+u", "u+x,", ",u+x", "+755", "a+rw=q", "U+x"] {
            #expect(throws: FileModeChange.ParseError.invalidSyntax, "\(bad)") { try FileModeChange.parse(bad) }
        }
    }
}
