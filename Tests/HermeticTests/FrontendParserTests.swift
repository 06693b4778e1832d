import Foundation
import Testing

@testable import Hermetic

/// Golden tests for `DockerfileParser`: each folder under `Tests/Fixtures/parser/` holds a `Dockerfile` and the
/// `expected.txt` dump of what it parses to; each folder under `Tests/Fixtures/parser-errors/` holds a
/// `Dockerfile` and the exact one-line error description in `expected-error.txt`.
/// `HERMETIC_RECORD_PARSER=1` rewrites the expected files and fails, so a refresh never passes silently.
@Suite struct FrontendParserTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let recording = ProcessInfo.processInfo.environment["HERMETIC_RECORD_PARSER"] == "1"

    static func cases(_ folder: String) -> [String] {
        let root = fixtures.appendingPathComponent(folder)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted()
    }

    static func dockerfileBytes(_ folder: String, _ name: String) throws -> [UInt8] {
        let url = fixtures.appendingPathComponent(folder).appendingPathComponent(name)
            .appendingPathComponent("Dockerfile")
        return Array(try Data(contentsOf: url))
    }

    /// Compares `actual` with the golden file, or records it (and fails) in record mode.
    static func compare(_ actual: String, folder: String, name: String, file: String) throws {
        let url = fixtures.appendingPathComponent(folder).appendingPathComponent(name)
            .appendingPathComponent(file)
        if recording {
            try Data(actual.utf8).write(to: url)
            Issue.record("recorded \(folder)/\(name)/\(file); unset HERMETIC_RECORD_PARSER and run again")
            return
        }
        let expected = try String(contentsOf: url, encoding: .utf8)
        #expect(actual == expected, "\(folder)/\(name)")
    }

    @Test func thereAreEnoughCases() {
        #expect(Self.cases("parser").count >= 30)
        #expect(Self.cases("parser-errors").count >= 15)
    }

    @Test(arguments: cases("parser"))
    func parsesAsRecorded(name: String) throws {
        let dockerfile = try DockerfileParser.parse(
            try Self.dockerfileBytes("parser", name), file: "Dockerfile")
        try Self.compare(ParseDump.dump(dockerfile), folder: "parser", name: name, file: "expected.txt")
    }

    @Test(arguments: cases("parser-errors"))
    func failsAsRecorded(name: String) throws {
        let bytes = try Self.dockerfileBytes("parser-errors", name)
        do {
            let parsed = try DockerfileParser.parse(bytes, file: "Dockerfile")
            Issue.record("\(name) parsed without error: \(ParseDump.dump(parsed))")
        } catch {
            try Self.compare(
                error.description + "\n", folder: "parser-errors", name: name,
                file: "expected-error.txt")
        }
    }

    /// BuildKit's TestParseHeredocHelpers: one word, as `ParseHeredoc` sees it.
    @Test func heredocWordsAsBuildKitReadsThem() throws {
        for word in [
            "<<EOF", "<<'EOF'", "<<\"EOF\"", "<<-EOF", "<<-'EOF'", "<<-\"EOF\"", "<<EO\"F\"", "<< EOF", "<<- EOF",
        ] {
            #expect(try InstructionBuilder.parseHeredoc(word)?.name == "EOF", "\(word)")
        }
        for word in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            #expect(throws: (any Error).self, "\(word)") { try InstructionBuilder.parseHeredoc(word) }
        }
        for word in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"] {
            #expect(try InstructionBuilder.parseHeredoc(word) == nil, "\(word)")
        }
        let names = try InstructionBuilder.heredocMarkers(inLine: "RUN <<EOF 4<<-'X' << -Y '<<Q' \"<<R\"").map(\.name)
        #expect(names == ["EOF", "X", "-Y"])
        #expect(try InstructionBuilder.heredocMarkers(inLine: "RUN <<EOF 'unterminated").isEmpty)
    }

    // Inputs too large or too binary to keep as fixture files.

    @Test func lineOverSixtyFourKiBIsRefused() {
        let text =
            "FROM scratch\nRUN echo " + String(repeating: "a", count: DockerfileLimits.maximumLineLength)
            + "\n"
        #expect(
            throws: DockerfileError(
                file: "Dockerfile", line: 2, message: "line too long (over 65536 bytes)")
        ) {
            try DockerfileParser.parse(Array(text.utf8), file: "Dockerfile")
        }
    }

    @Test func lineOfExactlySixtyFourKiBIsAccepted() throws {
        let prefix = "RUN "
        let text =
            "FROM scratch\n" + prefix
            + String(repeating: "a", count: DockerfileLimits.maximumLineLength - prefix.count) + "\r\n"
        let parsed = try DockerfileParser.parse(Array(text.utf8), file: "Dockerfile")
        #expect(parsed.instructions.count == 2)
    }

    @Test func nulByteIsRefused() {
        let bytes = Array("FROM scratch\nRUN a".utf8) + [0] + Array("b\n".utf8)
        #expect(
            throws: DockerfileError(file: "Dockerfile", line: 2, message: "the line contains a NUL byte")
        ) {
            try DockerfileParser.parse(bytes, file: "Dockerfile")
        }
    }

    @Test func invalidUTF8IsRefused() {
        let bytes = Array("FROM scratch\n\n# fine\nLABEL a=".utf8) + [0xC3, 0x28] + Array("\n".utf8)
        #expect(
            throws: DockerfileError(file: "Dockerfile", line: 4, message: "the line is not valid UTF-8")
        ) {
            try DockerfileParser.parse(bytes, file: "Dockerfile")
        }
    }

    @Test func oversizedFileIsRefusedBeforeParsing() {
        let bytes = [UInt8](repeating: UInt8(ascii: "#"), count: DockerfileLimits.maximumFileSize + 1)
        #expect(throws: DockerfileError.self) { try DockerfileParser.parse(bytes, file: "Dockerfile") }
    }

    /// BuildKit's parser: `file with no instructions`, at the last line read.
    @Test func fileWithoutInstructionsIsRefused() {
        #expect(throws: DockerfileError(file: "Dockerfile", line: 1, message: "file with no instructions")) {
            try DockerfileParser.parse([], file: "Dockerfile")
        }
        #expect(throws: DockerfileError(file: "Dockerfile", line: 1, message: "file with no instructions")) {
            try DockerfileParser.parse([0xEF, 0xBB, 0xBF], file: "Dockerfile")
        }
    }

    @Test func errorNamesTheFileGiven() {
        #expect(
            throws: DockerfileError(
                file: "sub/Containerfile", line: 1, message: "unknown instruction: NOPE (did you mean COPY?)")
        ) {
            try DockerfileParser.parse(Array("NOPE x".utf8), file: "sub/Containerfile")
        }
    }
}

/// A readable, stable dump of a parsed Dockerfile: a directives line, then one line per instruction
/// (`L<start>-<end> KIND field=value …`), strings quoted with `\n`, `\t`, `\\`, `\"` escaped.
enum ParseDump {
    static func dump(_ dockerfile: Dockerfile) -> String {
        let d = dockerfile.directives
        var lines = [
            "directives escape=\(q(String(d.escape))) syntax=\(opt(d.syntax)) check=\(opt(d.check))"
        ]
        for instruction in dockerfile.instructions {
            let place = "L\(instruction.range.start.line)-\(instruction.range.end.line)"
            lines.append("\(place) \(kind(instruction.kind))")
            lines.append("  original=\(q(instruction.original))")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func q(_ s: String) -> String {
        var out = "\""
        for ch in s.unicodeScalars {
            switch ch {
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            default: out.unicodeScalars.append(ch)
            }
        }
        return out + "\""
    }

    static func opt(_ s: String?) -> String { s.map(q) ?? "nil" }
    static func list(_ items: [String]) -> String { "[" + items.map(q).joined(separator: ", ") + "]" }

    static func form(_ command: CommandForm) -> String {
        switch command {
        case .shell(let text): return "shell=\(q(text))"
        case .exec(let words): return "exec=\(list(words))"
        }
    }

    static func heredocs(_ docs: [Heredoc]) -> String {
        docs.map { doc in
            " heredoc(name=\(q(doc.name)) expand=\(doc.expand) chomp=\(doc.chomp) fd=\(doc.fileDescriptor.map(String.init) ?? "nil") content=\(q(doc.content)))"
        }.joined()
    }

    static func pairs(_ list: [KeyValue]) -> String {
        list.map { "\(q($0.key))=\(q($0.value))" }.joined(separator: " ")
    }

    static func kind(_ kind: InstructionKind) -> String {
        switch kind {
        case .from(let from):
            return
                "FROM image=\(q(from.image)) stage=\(opt(from.stageName)) platform=\(opt(from.platform))"
        case .arg(let declarations):
            return "ARG "
                + declarations.map { "\(q($0.name))=\(opt($0.defaultValue))" }.joined(separator: " ")
        case .env(let list): return "ENV " + pairs(list)
        case .label(let list): return "LABEL " + pairs(list)
        case .copy(let c):
            return "\(c.isAdd ? "ADD" : "COPY") sources=\(list(c.sources)) dest=\(q(c.destination))"
                + " from=\(opt(c.from)) chown=\(opt(c.chown)) chmod=\(opt(c.chmod)) link=\(c.link)"
                + " parents=\(c.parents) excludes=\(list(c.excludes)) checksum=\(opt(c.checksum))"
                + " keepGitDir=\(c.keepGitDir) unpack=\(c.unpack.map { "\($0)" } ?? "nil")"
                + heredocs(c.heredocs)
        case .run(let r):
            return "RUN \(form(r.command)) mounts=\(list(r.mounts)) network=\(opt(r.network))"
                + " security=\(opt(r.security))" + heredocs(r.heredocs)
        case .workdir(let s): return "WORKDIR \(q(s))"
        case .user(let s): return "USER \(q(s))"
        case .cmd(let c): return "CMD \(form(c))"
        case .entrypoint(let c): return "ENTRYPOINT \(form(c))"
        case .shell(let words): return "SHELL \(list(words))"
        case .expose(let ports): return "EXPOSE \(list(ports))"
        case .volume(let paths): return "VOLUME \(list(paths))"
        case .stopSignal(let s): return "STOPSIGNAL \(q(s))"
        case .healthcheck(let h):
            return "HEALTHCHECK command=\(h.command.map(form) ?? "NONE") interval=\(opt(h.interval))"
                + " timeout=\(opt(h.timeout)) startPeriod=\(opt(h.startPeriod))"
                + " startInterval=\(opt(h.startInterval)) retries=\(opt(h.retries))"
        case .onbuild(let s): return "ONBUILD \(q(s))"
        case .maintainer(let s): return "MAINTAINER \(q(s))"
        }
    }
}
