import Foundation
import Testing

@testable import Hermetic

struct IgnoreCase: Sendable, CustomTestStringConvertible {
    var file: String
    var path: String
    var excluded: Bool
    var testDescription: String { "\(file.debugDescription) \(path) → \(excluded)" }
}

@Suite struct DockerIgnoreTableTests {
    static let cases: [IgnoreCase] = [
        // Docker documentation examples.
        IgnoreCase(file: "*/temp*", path: "somedir/temporary.txt", excluded: true),
        IgnoreCase(file: "*/temp*", path: "somedir/temp", excluded: true),
        IgnoreCase(file: "*/temp*", path: "temp", excluded: false),
        IgnoreCase(file: "*/temp*", path: "a/b/temp", excluded: false),
        IgnoreCase(file: "*/*/temp*", path: "somedir/subdir/temporary.txt", excluded: true),
        IgnoreCase(file: "temp?", path: "tempa", excluded: true),
        IgnoreCase(file: "temp?", path: "tempab", excluded: false),
        IgnoreCase(file: "temp?", path: "temp", excluded: false),
        IgnoreCase(file: "**/*.go", path: "a.go", excluded: true),
        IgnoreCase(file: "**/*.go", path: "a/b/c.go", excluded: true),
        IgnoreCase(file: "*.md\n!README.md", path: "README.md", excluded: false),
        IgnoreCase(file: "*.md\n!README.md", path: "CHANGES.md", excluded: true),
        IgnoreCase(file: "*.md\n!README*.md\nREADME-secret.md", path: "README-secret.md", excluded: true),
        IgnoreCase(file: "*.md\n!README*.md\nREADME-secret.md", path: "README-x.md", excluded: false),
        IgnoreCase(file: "*.md\nREADME-secret.md\n!README*.md", path: "README-secret.md", excluded: false),
        // Cleaning: leading `/` and `./`, `..`, doubled slashes, surrounding space, CRLF.
        IgnoreCase(file: "/abs", path: "abs", excluded: true),
        IgnoreCase(file: "./rel/", path: "rel/x", excluded: true),
        IgnoreCase(file: "foo/../bar", path: "bar", excluded: true),
        IgnoreCase(file: "a//b", path: "a/b", excluded: true),
        IgnoreCase(file: "   spaced  \t", path: "spaced", excluded: true),
        IgnoreCase(file: "crlf\r\nother", path: "crlf", excluded: true),
        IgnoreCase(file: "\u{FEFF}bom", path: "bom", excluded: true),
        IgnoreCase(file: "/", path: "a", excluded: false),
        // Parent directories decide for everything below them.
        IgnoreCase(file: "dir", path: "dir/sub/file", excluded: true),
        IgnoreCase(file: "*", path: "a/b", excluded: true),
        IgnoreCase(file: "docs\n!docs/keep.md", path: "docs/keep.md", excluded: false),
        IgnoreCase(file: "docs\n!docs/keep.md", path: "docs/other.md", excluded: true),
        IgnoreCase(file: "temp*\n!temp/keep", path: "temp/keep/x", excluded: false),
        IgnoreCase(file: "!temp/keep\ntemp*", path: "temp/keep/x", excluded: true),
        // `**`.
        IgnoreCase(file: "dir/**", path: "dir", excluded: false),
        IgnoreCase(file: "dir/**", path: "dir/a", excluded: true),
        IgnoreCase(file: "a/**/b", path: "a/b", excluded: true),
        IgnoreCase(file: "a/**/b", path: "a/x/y/b", excluded: true),
        IgnoreCase(file: "a/**/b", path: "a/xb", excluded: false),
        IgnoreCase(file: "**", path: "any/thing", excluded: true),
        IgnoreCase(file: "**/node_modules", path: "x/y/node_modules/z", excluded: true),
        // filepath.Match syntax.
        IgnoreCase(file: "*.txt", path: "sub/a.txt", excluded: false),
        IgnoreCase(file: "dir/*.txt", path: "dir/a.txt", excluded: true),
        IgnoreCase(file: "dir/*.txt", path: "dir/sub/a.txt", excluded: false),
        IgnoreCase(file: "a*b", path: "a/b", excluded: false),
        IgnoreCase(file: "?", path: "a", excluded: true),
        IgnoreCase(file: "?", path: "ab", excluded: false),
        IgnoreCase(file: "[a-c]x", path: "bx", excluded: true),
        IgnoreCase(file: "[a-c]x", path: "dx", excluded: false),
        IgnoreCase(file: "[^a-c]x", path: "dx", excluded: true),
        IgnoreCase(file: "[^a-c]x", path: "ax", excluded: false),
        IgnoreCase(file: "\\*star", path: "*star", excluded: true),
        IgnoreCase(file: "\\*star", path: "xstar", excluded: false),
        IgnoreCase(file: "[\\]]x", path: "]x", excluded: true),
        // Comments only when `#` is the first character of the line.
        IgnoreCase(file: "#comment", path: "#comment", excluded: false),
        IgnoreCase(file: "  #x", path: "#x", excluded: true),
        IgnoreCase(file: "! spaced-exception\nspaced*\n!spaced-exception", path: "spaced-exception", excluded: false),
    ]

    /// The table above, written by a second engineer from moby/patternmatcher's behaviour and the Docker
    /// documentation, run against our matcher.
    @Test(arguments: cases)
    func matchesLikePatternmatcher(_ testCase: IgnoreCase) throws {
        let ignore = try DockerIgnore(text: testCase.file, file: ".dockerignore")
        #expect(ignore.isExcluded(testCase.path) == testCase.excluded)
    }
}
