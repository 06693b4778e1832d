import Foundation

/// `.dockerignore` with moby/patternmatcher semantics: patterns are cleaned relative paths; `*` and `?`
/// stay within one path component, `**` spans any number of them, `[…]` classes and `\` escapes as Go's
/// filepath.Match; `!` re-includes; the last matching pattern wins; a path is matched when it or any of
/// its parent directories matches.
public struct DockerIgnore: Sendable {
    struct Pattern: Sendable {
        var text: String
        var exclusion: Bool
        var regex: NSRegularExpression
    }

    private var patterns: [Pattern] = []

    public init() {}

    public struct PatternError: HermeticError {
        public var file: String
        public var line: Int
        public var pattern: String
        public var description: String { "\(file):\(line): invalid pattern \"\(pattern)\"" }
    }

    public init(text: String, file: String) throws {
        var number = 0
        // Swift reads "\r\n" as one Character: split on either line ending. A leading BOM is dropped, and
        // `#` starts a comment only in the first column (moby checks before trimming).
        let body = text.hasPrefix("\u{FEFF}") ? String(text.dropFirst()) : text
        for rawLine in body.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            number += 1
            if rawLine.hasPrefix("#") { continue }
            var line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty { continue }
            var exclusion = false
            if line.hasPrefix("!") {
                exclusion = true
                line = String(line.dropFirst()).trimmingCharacters(in: .whitespaces)
                // moby/patternmatcher: a `!` excluding nothing is an illegal exclusion pattern.
                guard !line.isEmpty else { throw PatternError(file: file, line: number, pattern: "!") }
            }
            let cleaned = RootedPath.components(line).joined(separator: "/")
            let pattern = cleaned.isEmpty ? "." : cleaned
            guard let regex = Self.regex(for: pattern) else {
                throw PatternError(file: file, line: number, pattern: line)
            }
            patterns.append(Pattern(text: pattern, exclusion: exclusion, regex: regex))
        }
    }

    /// `<Dockerfile>.dockerignore` beside the Dockerfile wins over `.dockerignore` at the context root.
    public static func load(contextRoot: String, dockerfilePath: String) throws -> DockerIgnore {
        for candidate in [dockerfilePath + ".dockerignore", contextRoot + "/.dockerignore"] {
            guard FileSystem.exists(candidate) else { continue }
            let bytes = try FileSystem.readFile(candidate, limit: 1 << 20)
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw PatternError(file: candidate, line: 1, pattern: "(not valid UTF-8)")
            }
            return try DockerIgnore(text: text, file: candidate)
        }
        return DockerIgnore()
    }

    public var isEmpty: Bool { patterns.isEmpty }

    /// Whether `relativePath` (cleaned, relative to the context root) is excluded.
    public func isExcluded(_ relativePath: String) -> Bool {
        guard !patterns.isEmpty else { return false }
        let parts = relativePath.split(separator: "/").map(String.init)
        var parents: [String] = []
        var prefix = ""
        for part in parts.dropLast() {
            prefix = prefix.isEmpty ? part : prefix + "/" + part
            parents.append(prefix)
        }
        var matched = false
        for pattern in patterns {
            var hit = Self.matches(pattern.regex, relativePath)
            if !hit {
                hit = parents.contains { Self.matches(pattern.regex, $0) }
            }
            if hit { matched = !pattern.exclusion }
        }
        return matched
    }

    /// Whether an exception pattern could re-include something below `directory`, so it must be walked
    /// even though it is excluded.
    public func mayReinclude(under directory: String) -> Bool {
        patterns.contains { $0.exclusion && ($0.text.hasPrefix(directory + "/") || $0.text.contains("*")) }
    }

    static func matches(_ regex: NSRegularExpression, _ text: String) -> Bool {
        regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
    }

    /// patternmatcher's translation of a pattern into an anchored regular expression.
    static func regex(for pattern: String) -> NSRegularExpression? {
        var result = "^"
        let chars = Array(pattern)
        var i = 0
        while i < chars.count {
            let ch = chars[i]
            switch ch {
            case "*":
                if i + 1 < chars.count, chars[i + 1] == "*" {
                    i += 1
                    if i + 1 < chars.count, chars[i + 1] == "/" { i += 1 }
                    result += i + 1 >= chars.count ? ".*" : "(.*/)?"
                } else {
                    result += "[^/]*"
                }
            case "?":
                result += "[^/]"
            case "\\":
                guard i + 1 < chars.count else { return nil }
                i += 1
                result += NSRegularExpression.escapedPattern(for: String(chars[i]))
            case "[":
                var j = i + 1
                var body = ""
                if j < chars.count, chars[j] == "^" || chars[j] == "!" {
                    body = "^"
                    j += 1
                }
                var closed = false
                while j < chars.count {
                    if chars[j] == "]" && !(body.isEmpty || body == "^") {
                        closed = true
                        break
                    }
                    if chars[j] == "\\" {
                        j += 1
                        guard j < chars.count else { return nil }
                    }
                    let c = chars[j]
                    body += c == "-" ? "-" : NSRegularExpression.escapedPattern(for: String(c))
                    j += 1
                }
                guard closed else { return nil }
                result += "[" + body + "]"
                i = j
            case ".", "$", "^", "+", "(", ")", "{", "}", "|", "]":
                result += "\\" + String(ch)
            default:
                result += String(ch)
            }
            i += 1
        }
        result += "$"
        return try? NSRegularExpression(pattern: result)
    }
}
