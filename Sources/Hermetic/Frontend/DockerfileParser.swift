// Frontend/ — Dockerfile bytes in; a `Dockerfile` out: typed instructions with source ranges (parser,
// shell lexer for expansion, JSON forms). Nothing is read from disk or expanded against a stage here.

import Foundation

/// Dockerfile text → `Dockerfile`: directives, comments, line continuations, heredocs, flags, and one
/// typed instruction per logical line, each with its source range. No variable is expanded here.
public enum DockerfileParser {
    public static func parse(_ bytes: [UInt8], file: String) throws(DockerfileError) -> Dockerfile {
        var reader = try LineReader(bytes: bytes, file: file)
        let directives = try reader.readDirectives()
        var instructions: [Instruction] = []
        while let logical = try reader.nextLogicalLine(escape: directives.escape) {
            guard instructions.count < DockerfileLimits.maximumInstructions else {
                throw DockerfileError(file: file, line: logical.startLine, message: "too many instructions")
            }
            instructions.append(
                try InstructionBuilder(file: file, escape: directives.escape)
                    .build(logical, heredocReader: &reader))
        }
        guard !instructions.isEmpty else {
            // BuildKit's parser, at the line it stopped on.
            throw DockerfileError(file: file, line: max(1, reader.lineCount), message: "file with no instructions")
        }
        return Dockerfile(file: file, directives: directives, instructions: instructions)
    }
}

/// One instruction's text with its line range, continuation lines joined.
struct LogicalLine {
    var text: String
    var startLine: Int
    var endLine: Int
}

/// Splits the file into lines and hands them out: directives first, then logical lines, and heredoc
/// bodies on request.
struct LineReader {
    let file: String
    private var lines: [String] = []
    private var position = 0

    init(bytes: [UInt8], file: String) throws(DockerfileError) {
        self.file = file
        guard bytes.count <= DockerfileLimits.maximumFileSize else {
            throw DockerfileError(
                file: file, line: 1, message: "the Dockerfile is larger than \(DockerfileLimits.maximumFileSize) bytes")
        }
        var body = bytes[...]
        if body.starts(with: [0xEF, 0xBB, 0xBF]) { body = body.dropFirst(3) }
        var number = 0
        for rawLine in body.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            number += 1
            var line = rawLine
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            guard line.count <= DockerfileLimits.maximumLineLength else {
                throw DockerfileError(
                    file: file, line: number,
                    message: "line too long (over \(DockerfileLimits.maximumLineLength) bytes)")
            }
            guard !line.contains(0) else {
                throw DockerfileError(file: file, line: number, message: "the line contains a NUL byte")
            }
            guard let text = String(validating: line, as: UTF8.self) else {
                throw DockerfileError(file: file, line: number, message: "the line is not valid UTF-8")
            }
            lines.append(text)
        }
        if lines.last == "" { lines.removeLast() }
    }

    private static func trimmedLeading(_ s: String) -> Substring {
        s.drop { $0 == " " || $0 == "\t" }
    }

    static func isBlank(_ s: String) -> Bool { trimmedLeading(s).isEmpty }
    static func isComment(_ s: String) -> Bool { trimmedLeading(s).hasPrefix("#") }

    /// Parser directives: `# key=value` lines at the very top. The first line that is not a known
    /// directive ends them (BuildKit's rule); a known directive given twice is an error.
    mutating func readDirectives() throws(DockerfileError) -> ParserDirectives {
        var directives = ParserDirectives()
        var seen = Set<String>()
        while position < lines.count {
            let line = lines[position]
            guard let (key, value) = Self.directive(line) else { break }
            guard ["syntax", "escape", "check"].contains(key) else { break }
            guard seen.insert(key).inserted else {
                throw DockerfileError(
                    file: file, line: position + 1, message: "only one \(key) parser directive can be used")
            }
            switch key {
            case "escape":
                guard value == "\\" || value == "`" else {
                    throw DockerfileError(
                        file: file, line: position + 1,
                        message: "invalid escape token '\(value)' does not validate")
                }
                directives.escape = Character(value)
            case "syntax": directives.syntax = value
            default: directives.check = value
            }
            position += 1
        }
        return directives
    }

    /// `#` space* name space* `=` space* value, name made of letters and digits.
    static func directive(_ line: String) -> (String, String)? {
        var rest = trimmedLeading(line)
        guard rest.first == "#" else { return nil }
        rest = rest.dropFirst().drop { $0 == " " || $0 == "\t" }
        let name = rest.prefix { $0.isASCII && ($0.isLetter || $0.isNumber) }
        guard let first = name.first, first.isLetter else { return nil }
        rest = rest.dropFirst(name.count).drop { $0 == " " || $0 == "\t" }
        guard rest.first == "=" else { return nil }
        let value = rest.dropFirst().trimmingCharacters(in: .whitespaces)
        guard !value.isEmpty else { return nil }
        return (name.lowercased(), value)
    }

    /// The next instruction's text, continuation lines joined (comment and blank lines inside a
    /// continuation are skipped, as BuildKit does). nil at the end of the file.
    mutating func nextLogicalLine(escape: Character) throws(DockerfileError) -> LogicalLine? {
        while position < lines.count, Self.isBlank(lines[position]) || Self.isComment(lines[position]) {
            position += 1
        }
        guard position < lines.count else { return nil }
        let start = position + 1
        var text = String(Self.trimmedLeading(lines[position]))
        position += 1
        while let stripped = Self.removingContinuation(text, escape: escape) {
            text = stripped
            while position < lines.count, Self.isBlank(lines[position]) || Self.isComment(lines[position]) {
                position += 1
            }
            guard position < lines.count else { break }
            text += lines[position]
            position += 1
            guard text.utf8.count <= DockerfileLimits.maximumLineLength * 16 else {
                throw DockerfileError(file: file, line: start, message: "instruction too long")
            }
        }
        return LogicalLine(text: text, startLine: start, endLine: position)
    }

    /// The text without its trailing escape character (and blanks after it), or nil if it has none.
    static func removingContinuation(_ text: String, escape: Character) -> String? {
        var end = text.endIndex
        while end > text.startIndex, text[text.index(before: end)] == " " || text[text.index(before: end)] == "\t" {
            end = text.index(before: end)
        }
        guard end > text.startIndex, text[text.index(before: end)] == escape else { return nil }
        return String(text[..<text.index(before: end)])
    }

    /// Reads a heredoc body up to its terminator line (for `<<-`, one with leading tabs too); returns the
    /// body as written and advances past it.
    mutating func readHeredoc(name: String, chomp: Bool, instructionLine: Int) throws(DockerfileError) -> String {
        var body = ""
        while position < lines.count {
            let line = lines[position]
            position += 1
            if (chomp ? String(line.drop { $0 == "\t" }) : line) == name { return body }
            body += line + "\n"
            guard body.utf8.count <= DockerfileLimits.maximumFileSize else { break }
        }
        throw DockerfileError(file: file, line: instructionLine, message: "unterminated heredoc \(name)")
    }

    var currentLine: Int { position }
    var lineCount: Int { lines.count }
}
