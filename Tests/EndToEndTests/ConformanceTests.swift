import Foundation
import Hermetic
import TestSupport
import Testing

/// Dockerfile-reference behaviour, checked on real builds by the real binary: the image config is read by
/// skopeo (an outside reader), the files from a `type=local` export.
@Suite struct ConformanceTests {
    struct Case: CustomStringConvertible, Sendable {
        var name: String
        var dockerfile: String
        var files: [String: String] = [:]
        var arguments: [String] = []
        var usesBase = false
        /// path → expected content ("<dir>" for a directory, "-> target" for a symlink).
        var expectFiles: [String: String] = [:]
        /// path → expected permission bits.
        var expectModes: [String: Int] = [:]
        /// path → "uid:gid".
        var expectOwners: [String: String] = [:]
        var expectAbsent: [String] = []
        var expectLabels: [String: String] = [:]
        var expectEnv: [String] = []
        /// Keys of the config's `config` object: expected value (as JSON) or nil for absent.
        var expectConfig: [String: String?] = [:]
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "directory source copies its contents", dockerfile: "FROM scratch\nCOPY dir /dst\n",
            files: ["dir/a.txt": "a", "dir/sub/b.txt": "b"],
            expectFiles: ["dst/a.txt": "a", "dst/sub/b.txt": "b"], expectAbsent: ["dst/dir"]),
        Case(
            name: "file to dir with trailing slash", dockerfile: "FROM scratch\nCOPY a.txt /dst/\n",
            files: ["a.txt": "a"], expectFiles: ["dst/a.txt": "a"]),
        Case(
            name: "file to a new name", dockerfile: "FROM scratch\nCOPY a.txt /dst\n",
            files: ["a.txt": "a"], expectFiles: ["dst": "a"]),
        Case(
            name: "file into an existing directory without slash",
            dockerfile: "FROM scratch\nCOPY d/ /existing/\nCOPY a.txt /existing\n",
            files: ["a.txt": "a", "d/x": "x"], expectFiles: ["existing/a.txt": "a", "existing/x": "x"]),
        Case(
            name: "wildcards", dockerfile: "FROM scratch\nCOPY *.txt /w/\nCOPY f?.md /q/\n",
            files: ["a.txt": "a", "b.txt": "b", "c.md": "c", "f1.md": "1", "f22.md": "22"],
            expectFiles: ["w/a.txt": "a", "w/b.txt": "b", "q/f1.md": "1"],
            expectAbsent: ["w/c.md", "q/f22.md"]),
        Case(
            name: "a wildcard matching nothing copies nothing (BuildKit's AllowEmptyWildcard)",
            dockerfile: "FROM scratch\nCOPY *.nothing /none/\nCOPY a.txt /a\n",
            files: ["a.txt": "a"], expectFiles: ["a": "a"], expectAbsent: ["none"]),
        Case(
            name: "relative destination uses WORKDIR", dockerfile: "FROM scratch\nWORKDIR /app\nCOPY a.txt rel/\n",
            files: ["a.txt": "a"], expectFiles: ["app/rel/a.txt": "a"]),
        Case(
            name: "chmod", dockerfile: "FROM scratch\nCOPY --chmod=751 a.txt /a\nCOPY --chmod=0640 d /d\n",
            files: ["a.txt": "a", "d/x": "x"], expectModes: ["a": 0o751, "d/x": 0o640]),
        Case(
            name: "chown numeric", dockerfile: "FROM scratch\nCOPY --chown=42:43 a.txt /a\n",
            files: ["a.txt": "a"], expectOwners: ["a": "42:43"]),
        Case(
            name: "chown by name from the stage's /etc/passwd",
            dockerfile: "FROM base\nCOPY --chown=app:staff a.txt /a\nCOPY --chown=app b.txt /b\n",
            files: ["a.txt": "a", "b.txt": "b"], usesBase: true,
            expectOwners: ["a": "1000:50", "b": "1000:1000"]),
        Case(
            name: "owners default to root", dockerfile: "FROM scratch\nCOPY a.txt /a\n",
            files: ["a.txt": "a"], expectOwners: ["a": "0:0"]),
        Case(
            name: "dockerignore", dockerfile: "FROM scratch\nCOPY . /c/\n",
            files: [
                ".dockerignore": "*.log\n!keep.log\n**/cache\n", "x.log": "x", "keep.log": "k", "a/cache/z": "z",
                "a/b.txt": "b",
            ],
            expectFiles: ["c/keep.log": "k", "c/a/b.txt": "b"], expectAbsent: ["c/x.log", "c/a/cache"]),
        Case(
            name: "heredoc expands unless quoted",
            dockerfile:
                "FROM scratch\nARG WHO=world\nCOPY <<EOF /h1\nhello $WHO\nEOF\nCOPY <<\"EOF\" /h2\nhello $WHO\nEOF\n",
            expectFiles: ["h1": "hello world\n", "h2": "hello $WHO\n"]),
        Case(
            // BuildKit's testCopyHeredocSpecialSymbols, plus a backtick escape directive that heredoc
            // bodies ignore (BuildKit expands them with a lexer of their own whose escape is always a backslash).
            name: "heredoc bodies process escapes unless the delimiter is quoted",
            dockerfile: #"""
                # escape=`
                FROM scratch
                COPY <<EOF quotefile
                "quotes in file"
                EOF
                COPY <<EOF slashfile1
                \
                EOF
                COPY <<EOF slashfile2
                \\
                EOF
                COPY <<EOF slashfile3
                \$
                EOF
                COPY <<"EOF" rawslashfile1
                \
                EOF
                COPY <<"EOF" rawslashfile2
                \\
                EOF
                COPY <<"EOF" rawslashfile3
                \$
                EOF

                """#,
            expectFiles: [
                "quotefile": "\"quotes in file\"\n", "slashfile1": "\n", "slashfile2": "\\\n", "slashfile3": "$\n",
                "rawslashfile1": "\\\n", "rawslashfile2": "\\\\\n", "rawslashfile3": "\\$\n",
            ]),
        Case(
            name: "global ARG needs redeclaring in a stage",
            dockerfile: "ARG V=global\nFROM scratch\nLABEL before=\"[$V]\"\nARG V\nLABEL after=\"[$V]\"\n",
            expectLabels: ["before": "[]", "after": "[global]"]),
        Case(
            // BuildKit's testTargetStageNameArg: seen once declared; the target's name, else `default`.
            name: "TARGETSTAGE names the target",
            dockerfile:
                "FROM scratch AS base\nLABEL first=\"[$TARGETSTAGE]\"\nARG TARGETSTAGE\nLABEL second=\"[$TARGETSTAGE]\"\nFROM base AS Foo\n",
            arguments: ["--target", "base"], expectLabels: ["first": "[]", "second": "[base]"]),
        Case(
            name: "TARGETSTAGE is the last stage's name, else default",
            dockerfile: "FROM scratch AS base\nARG TARGETSTAGE\nLABEL seen=\"[$TARGETSTAGE]\"\nFROM base\n",
            expectLabels: ["seen": "[default]"]),
        Case(
            name: "build arg overrides ARG default",
            dockerfile: "FROM scratch\nARG V=default\nLABEL v=$V\n", arguments: ["--build-arg", "V=cli"],
            expectLabels: ["v": "cli"]),
        Case(
            name: "a later ENV wins over an ARG", dockerfile: "FROM scratch\nARG V=arg\nENV V=env\nLABEL v=$V\n",
            arguments: ["--build-arg", "V=cli"], expectLabels: ["v": "env"]),
        Case(
            name: "expansion modifiers",
            dockerfile:
                "FROM scratch\nARG S=set\nARG E=\nLABEL a=${S:-d} b=${U:-d} c=${E:-d} d=${E-d} e=${S:+x} f=${U:+x} g='$S' h=\"$S\" i=\\$S\n",
            expectLabels: [
                "a": "set", "b": "d", "c": "d", "d": "", "e": "x", "f": "", "g": "$S", "h": "set", "i": "$S",
            ]),
        Case(
            // The image spec's Cmd and Entrypoint are omitempty: an empty list is no key (as BuildKit's config).
            name: "CMD [] clears the command", dockerfile: "FROM base\nCMD []\n", usesBase: true,
            expectConfig: ["Cmd": nil, "Entrypoint": nil]),
        Case(
            name: "ENTRYPOINT [] clears the entrypoint and the inherited command",
            dockerfile: "FROM base\nENTRYPOINT []\n", usesBase: true,
            expectConfig: ["Cmd": nil, "Entrypoint": nil]),
        Case(
            name: "ENTRYPOINT [] keeps a CMD of the same stage",
            dockerfile: "FROM base\nCMD [\"x\"]\nENTRYPOINT []\n", usesBase: true,
            expectConfig: ["Cmd": #"["x"]"#, "Entrypoint": nil]),
        Case(
            name: "COPY --chmod takes symbolic modes, applied to each file's own mode",
            dockerfile: "FROM scratch\nCOPY --chmod=go-w,u+x f /f\nCOPY --chmod=a+X d /d\nCOPY --chmod=a+x,g+s f /s\n",
            files: ["f": "x", "d/g": "y"],
            expectModes: ["f": 0o744, "d": 0o755, "d/g": 0o644, "s": 0o2755]),
        Case(
            name: "ARG defaults on one line see the ARGs before them; ENV values see the ENV before the line",
            dockerfile:
                "FROM scratch\nARG A=1 B=$A\nARG C=${B}x\nENV E=old\nENV E=new F=$E\nLABEL a=$A b=$B c=$C f=$F\n",
            expectLabels: ["a": "1", "b": "1", "c": "1x", "f": "old"]),
        Case(
            name: "COPY of a stage's directory creates the destination as root (testCopyChownExistingDir)",
            dockerfile:
                "FROM scratch AS source\nCOPY --chown=100:200 dir /dir\nFROM scratch\nCOPY --from=source /dir /dir\n",
            files: ["dir/f": "f"], expectOwners: ["dir": "0:0", "dir/f": "100:200"]),
        Case(
            name: "--chmod also sets the parents COPY creates (testCopyChmod)",
            dockerfile: "FROM scratch\nCOPY --chmod=777 foo /parent/foo\nCOPY --chmod=770 foo /parent/sub/foo\n",
            files: ["foo": "x"], expectModes: ["parent": 0o777, "parent/sub": 0o770, "parent/sub/foo": 0o770]),
        Case(
            name: "COPY --parents keeps the parents after a /./ pivot (testCopyRelativeParents)",
            dockerfile: "FROM scratch\nCOPY --parents test/a/b/./c/d /out/\nCOPY --parents test/a/b/c /all/\n",
            files: ["test/a/b/c/d/e/f": "f"],
            expectFiles: ["out/c/d/e/f": "f", "all/test/a/b/c/d/e/f": "f"], expectAbsent: ["out/test", "out/a"]),
        Case(
            name: "ENV forms", dockerfile: "FROM scratch\nENV A=1 B=\"two words\"\nENV C three words\n",
            expectEnv: ["A=1", "B=two words", "C=three words"]),
    ]

    @Test(arguments: cases)
    func behavesAsTheReferenceSays(testCase: Case) throws {
        let scratch = try TemporaryDirectory(prefix: "conformance-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try testCase.dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        for (name, text) in testCase.files {
            let path = context + "/" + name
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        var arguments = [
            "build", context, "--progress", "quiet", "--source-date-epoch", "1700000000",
            "--output", "type=oci,dest=\(scratch.path)/oci", "--output", "type=local,dest=\(scratch.path)/fs",
            // Named, so that skopeo picks the image beside its provenance's referrer in index.json.
            "-t", "conformance:1",
        ]
        if testCase.usesBase {
            let digest = try BaseImages.writeGoldenBase(at: scratch.path + "/base")
            arguments += ["--build-context", "base=oci-layout://\(scratch.path)/base@\(digest)"]
        }
        let outcome = try HermeticProcess.hermetic(arguments + testCase.arguments)
        try #require(outcome.status == 0, "build failed: \(outcome.standardError)")

        let fs = scratch.path + "/fs/"
        let fm = FileManager.default
        for (path, expected) in testCase.expectFiles {
            if expected == "<dir>" {
                var isDirectory: ObjCBool = false
                #expect(fm.fileExists(atPath: fs + path, isDirectory: &isDirectory) && isDirectory.boolValue, "\(path)")
            } else if expected.hasPrefix("-> ") {
                #expect(
                    (try? fm.destinationOfSymbolicLink(atPath: fs + path)) == String(expected.dropFirst(3)), "\(path)")
            } else {
                #expect((try? String(contentsOfFile: fs + path, encoding: .utf8)) == expected, "\(path)")
            }
        }
        for path in testCase.expectAbsent {
            #expect(!fm.fileExists(atPath: fs + path), "\(path) should not exist")
        }
        for (path, mode) in testCase.expectModes {
            var info = stat()
            #expect(lstat(fs + path, &info) == 0 && Int(info.st_mode) & 0o7777 == mode, "\(path) mode")
        }
        for (path, owner) in testCase.expectOwners {
            var info = stat()
            #expect(lstat(fs + path, &info) == 0 && "\(info.st_uid):\(info.st_gid)" == owner, "\(path) owner")
        }
        if !testCase.expectLabels.isEmpty || !testCase.expectEnv.isEmpty || !testCase.expectConfig.isEmpty {
            let skopeo = try ExternalTools.require("skopeo")
            let inspected = try HermeticProcess.run(skopeo, ["inspect", "--config", "oci:\(scratch.path)/oci:1"])
            try #require(inspected.status == 0, "skopeo: \(inspected.standardError)")
            let json = try JSONSerialization.jsonObject(with: Data(inspected.standardOutput.utf8)) as? [String: Any]
            let config = json?["config"] as? [String: Any]
            let labels = config?["Labels"] as? [String: String] ?? [:]
            for (key, value) in testCase.expectLabels {
                #expect(labels[key] == value, "label \(key): \(labels[key] ?? "nil")")
            }
            let env = config?["Env"] as? [String] ?? []
            for line in testCase.expectEnv { #expect(env.contains(line), "env \(line) in \(env)") }
            for (key, expected) in testCase.expectConfig {
                let value = try config?[key].map {
                    String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self)
                }
                #expect(value == expected, "config \(key): \(value ?? "absent")")
            }
        }
    }
}
