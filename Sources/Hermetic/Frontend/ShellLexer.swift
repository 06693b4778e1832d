/// Variable expansion and quote removal as BuildKit's shell lexer (frontend/dockerfile/shell/lex.go) does it, a
/// subset of POSIX shell word expansion: `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`, `${v:?m}`,
/// `${v?m}`, `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}` (also written `${v:#p}`…), `${v/p/r}`, `${v//p/r}`;
/// names are Unicode letters, digits and `_`, or digits alone (`$12`), or one special parameter (`$#`, `${@}`,
/// `$0`…); single quotes (literal), double quotes (expansion, the escape character escapes `"`, `$` and
/// itself), and the escape character outside quotes. Unset variables expand to nothing. Bounded: nesting
/// depth and output size are capped.
public struct ShellLexer: Sendable {
    public let escape: Character
    let mode: Mode
    /// The escape as the one scalar the lexer compares (the directive allows only `\` and a backtick).
    private var escapeScalar: Unicode.Scalar { escape.unicodeScalars.first ?? "\\" }
    static let maximumDepth = 64
    static let maximumOutput = 1 << 20

    /// BuildKit's `Lex` switches. Instructions use none; the parser's heredoc detection and heredoc bodies
    /// use lexers of their own with some of them on.
    struct Mode: Sendable {
        /// Quotes stay in the result (and still group words).
        var rawQuotes = false
        /// Escape characters stay in the result at the top level (they still escape).
        var rawEscapes = false
        /// An unset variable stays as written (`$X`, `${X}`, `${X:-w}`) instead of expanding to nothing.
        var skipUnsetEnv = false
        /// Quotes are ordinary characters.
        var skipProcessQuotes = false
    }

    public init(escape: Character) {
        self.init(escape: escape, mode: Mode())
    }

    init(escape: Character, mode: Mode) {
        self.escape = escape
        self.mode = mode
    }

    public struct ExpansionError: Error, CustomStringConvertible {
        public var description: String
    }

    /// One word: expansions done, quotes removed.
    public func processWord(_ word: String, lookup: (String) -> String?) throws -> String {
        var scanner = Scanner(word)
        return try process(&scanner, stopAt: nil, depth: 0, lookup: lookup, words: nil, rawEscapes: mode.rawEscapes)
    }

    /// Several words, split on unquoted blanks (including blanks that unquoted expansions produce).
    public func processWords(_ text: String, lookup: (String) -> String?) throws -> [String] {
        var scanner = Scanner(text)
        var words = WordCollector()
        _ = try process(&scanner, stopAt: nil, depth: 0, lookup: lookup, words: &words, rawEscapes: mode.rawEscapes)
        return words.finish()
    }

    /// Heredoc bodies of COPY/ADD: expansions done, quotes are ordinary characters, and the escape character
    /// escapes the next character as anywhere else (`\\` gives `\`, `\$` gives `$`, `\` before a newline is
    /// dropped). BuildKit expands them with a lexer of its own whose escape is always `\`, whatever the
    /// `# escape=` directive says (its `SkipProcessQuotes` mode).
    public static func processHeredoc(_ text: String, lookup: (String) -> String?) throws -> String {
        try ShellLexer(escape: "\\", mode: Mode(skipProcessQuotes: true)).processWord(text, lookup: lookup)
    }

    /// Unicode scalars, as Go's text/scanner reads runes (so `é` written as e + U+0301 is two of them).
    struct Scanner {
        let chars: [Unicode.Scalar]
        var index = 0
        init(_ text: String) { self.chars = Array(text.unicodeScalars) }
        var atEnd: Bool { index >= chars.count }
        func peek(_ offset: Int = 0) -> Unicode.Scalar? { index + offset < chars.count ? chars[index + offset] : nil }
        mutating func next() -> Unicode.Scalar? {
            guard index < chars.count else { return nil }
            defer { index += 1 }
            return chars[index]
        }
    }

    struct WordCollector {
        var words: [String] = []
        var current = ""
        var inWord = false
        mutating func append(_ text: String) {
            current += text
            inWord = true
        }
        mutating func appendSplitting(_ text: String) {
            for ch in text.unicodeScalars {
                if ch.properties.isWhitespace { boundary() } else { append(String(ch)) }
            }
        }
        mutating func markWord() { inWord = true }
        mutating func boundary() {
            // BuildKit drops empty words, even quoted ones: `a "" b` is two words.
            if inWord, !current.isEmpty { words.append(current) }
            current = ""
            inWord = false
        }
        mutating func finish() -> [String] {
            boundary()
            return words
        }
    }

    private func check(_ result: String) throws {
        guard result.utf8.count <= Self.maximumOutput else {
            throw ExpansionError(description: "variable expansion produces more than \(Self.maximumOutput) bytes")
        }
    }

    private func process(
        _ s: inout Scanner, stopAt stop: Unicode.Scalar?, depth: Int, lookup: (String) -> String?,
        words: UnsafeMutablePointer<WordCollector>?, rawEscapes: Bool
    ) throws -> String {
        guard depth < Self.maximumDepth else {
            throw ExpansionError(description: "variable expansion nested more than \(Self.maximumDepth) deep")
        }
        var result = ""
        func emit(_ text: String, splitting: Bool = false) {
            result += text
            if let words {
                if splitting { words.pointee.appendSplitting(text) } else { words.pointee.append(text) }
            }
        }
        while let ch = s.peek() {
            if let stop, ch == stop { break }
            if words != nil, ch.properties.isWhitespace {
                _ = s.next()
                result.unicodeScalars.append(ch)
                words?.pointee.boundary()
                continue
            }
            if ch == "'" && !mode.skipProcessQuotes {
                _ = s.next()
                var literal = mode.rawQuotes ? "'" : ""
                var closed = false
                while let c = s.next() {
                    if c == "'" {
                        closed = true
                        break
                    }
                    literal.unicodeScalars.append(c)
                }
                guard closed else {
                    throw ExpansionError(
                        description: "unexpected end of statement while looking for matching single-quote")
                }
                if mode.rawQuotes { literal.append("'") }
                words?.pointee.markWord()
                emit(literal)
            } else if ch == "\"" && !mode.skipProcessQuotes {
                _ = s.next()
                words?.pointee.markWord()
                emit(try doubleQuoted(&s, depth: depth, lookup: lookup, rawEscapes: rawEscapes))
            } else if ch == "$" {
                _ = s.next()
                emit(try dollar(&s, depth: depth, lookup: lookup), splitting: true)
            } else if ch == "<" {
                // BuildKit keeps the blanks after an unquoted `<<` in its word, so `<< EOF` is one word (a
                // heredoc delimiter) when words are split.
                _ = s.next()
                var text = "<"
                if s.peek() == "<" {
                    _ = s.next()
                    text = "<<"
                    while let c = s.peek(), c == " " || c == "\t" || c == "\r" {
                        text.unicodeScalars.append(c)
                        _ = s.next()
                    }
                }
                emit(text)
            } else if ch == escapeScalar {
                _ = s.next()
                // Patterns keep their escapes for the matcher (`${v%\*}` removes a literal `*`); so does
                // heredoc detection, even for a lone escape at the very end (otherwise dropped, as BuildKit does).
                if rawEscapes { emit(String(ch)) }
                if let escaped = s.next() { emit(String(escaped)) }
            } else {
                _ = s.next()
                emit(String(ch))
            }
            try check(result)
        }
        return result
    }

    private func doubleQuoted(_ s: inout Scanner, depth: Int, lookup: (String) -> String?, rawEscapes: Bool = false)
        throws -> String
    {
        var result = mode.rawQuotes ? "\"" : ""
        while let ch = s.next() {
            if ch == "\"" { return mode.rawQuotes ? result + "\"" : result }
            if ch == "$" {
                result += try dollar(&s, depth: depth, lookup: lookup)
            } else if ch == escapeScalar {
                // As BuildKit: a kept escape is written, then the escaped character, or the escape again when
                // it escapes nothing (so `"\a"` keeps two backslashes when escapes are kept).
                if rawEscapes { result.unicodeScalars.append(ch) }
                if let next = s.peek(), next == "\"" || next == "$" || next == escapeScalar {
                    _ = s.next()
                    result.unicodeScalars.append(next)
                } else {
                    result.unicodeScalars.append(ch)
                }
            } else {
                result.unicodeScalars.append(ch)
            }
            try check(result)
        }
        throw ExpansionError(description: "unterminated quoted string")
    }

    /// BuildKit's special parameters: one-character names (`$#`, `${@}`, `$0`…), all normally unset.
    static let specialParameters: Set<Unicode.Scalar> = ["@", "*", "#", "?", "-", "$", "!", "0"]

    /// Go's unicode.IsLetter and unicode.IsDigit.
    private static func isLetter(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: true
        default: false
        }
    }

    private static func isDigit(_ c: Unicode.Scalar) -> Bool { c.properties.generalCategory == .decimalNumber }

    /// BuildKit's processName: digits (`$12`), one special parameter, or letters, digits and `_` (Unicode
    /// letters and digits, as Go's). Empty when none of these follows.
    private static func name(_ s: inout Scanner) -> String {
        var name = ""
        while let c = s.peek() {
            if name.isEmpty && isDigit(c) {
                while let d = s.peek(), isDigit(d) {
                    name.unicodeScalars.append(d)
                    _ = s.next()
                }
                return name
            }
            if name.isEmpty && specialParameters.contains(c) {
                _ = s.next()
                return String(c)
            }
            guard isLetter(c) || isDigit(c) || c == "_" else { break }
            name.unicodeScalars.append(c)
            _ = s.next()
        }
        return name
    }

    private func dollar(_ s: inout Scanner, depth: Int, lookup: (String) -> String?) throws -> String {
        if s.peek() != "{" {
            let name = Self.name(&s)
            if name.isEmpty { return "$" }
            return lookup(name) ?? (mode.skipUnsetEnv ? "$" + name : "")
        }
        _ = s.next()  // {
        switch s.peek() {
        case nil: throw ExpansionError(description: "syntax error: missing '}'")
        case "{", "}", ":": throw ExpansionError(description: "syntax error: bad substitution")
        default: break
        }
        let name = Self.name(&s)
        guard let op = s.next() else {
            throw ExpansionError(description: "bad substitution: missing } after ${\(name)")
        }
        if op == "}" { return lookup(name) ?? (mode.skipUnsetEnv ? "${\(name)}" : "") }
        let value = lookup(name)
        func word(rawEscapes: Bool = false) throws -> String {
            let w = try process(
                &s, stopAt: "}", depth: depth + 1, lookup: lookup, words: nil, rawEscapes: rawEscapes)
            guard s.next() == "}" else {
                throw ExpansionError(description: "bad substitution: missing } in ${\(name)…")
            }
            return w
        }
        // With `skipUnsetEnv`, an unset variable's expression is given back with its word expanded.
        func unset(_ modifier: String, _ word: String) -> String? {
            mode.skipUnsetEnv && value == nil ? "${\(name)\(modifier)\(word)}" : nil
        }
        // `#`/`%` patterns keep their escapes for the matcher; `##`/`%%` is seen after the pattern is expanded.
        func trimmed(_ op: Unicode.Scalar, nullIsUnset: Bool) throws -> String {
            var pattern = try word(rawEscapes: true)
            if let kept = unset((nullIsUnset ? ":" : "") + String(op), pattern) { return kept }
            let longest = pattern.unicodeScalars.first == op
            if longest { pattern.unicodeScalars.removeFirst() }
            try Self.validatePattern(pattern)
            try Self.checkPatternInput(value, name: name)
            return Self.trim(value ?? "", pattern: pattern, fromStart: op == "#", longest: longest)
        }
        switch op {
        case ":":
            guard let modifier = s.next() else { throw ExpansionError(description: "bad substitution: ${\(name):") }
            // As BuildKit: `${v:#p}` and `${v:%p}` are `${v#p}` and `${v%p}` (the colon changes nothing there).
            if modifier == "#" || modifier == "%" { return try trimmed(modifier, nullIsUnset: true) }
            let w = try word()
            if let kept = unset(":" + String(modifier), w) { return kept }
            let setAndNonEmpty = !(value ?? "").isEmpty
            switch modifier {
            case "-": return setAndNonEmpty ? value ?? "" : w
            case "+": return setAndNonEmpty ? w : ""
            case "?":
                guard setAndNonEmpty else {
                    let reason = value == nil ? "is not allowed to be unset" : "is not allowed to be empty"
                    throw ExpansionError(description: "\(name): \(w.isEmpty ? reason : w)")
                }
                return value ?? ""
            default:
                throw ExpansionError(
                    description: "unsupported modifier (\(modifier)) in substitution ${\(name):\(modifier)…}")
            }
        case "-", "+", "?":
            let w = try word()
            if let kept = unset(String(op), w) { return kept }
            if op == "-" { return value ?? w }
            if op == "+" { return value == nil ? "" : w }
            guard let value else {
                throw ExpansionError(description: "\(name): \(w.isEmpty ? "is not allowed to be unset" : w)")
            }
            return value
        case "#", "%":
            return try trimmed(op, nullIsUnset: false)
        case "/":
            let all = s.peek() == "/"
            if all { _ = s.next() }
            let pattern = try process(
                &s, stopAt: "/", depth: depth + 1, lookup: lookup, words: nil, rawEscapes: true)
            // BuildKit requires the second `/` (`${v/p}` is an error) and keeps escapes in the replacement.
            guard s.next() == "/" else { throw ExpansionError(description: "syntax error: missing '/' in ${}") }
            let replacement = try word(rawEscapes: true)
            // BuildKit gives back one `/` even for `//`.
            if let kept = unset("/", pattern + "/" + replacement) { return kept }
            try Self.validatePattern(pattern)
            try Self.checkPatternInput(value, name: name)
            return Self.replace(value ?? "", pattern: pattern, with: replacement, all: all)
        default:
            throw ExpansionError(description: "unsupported modifier (\(op)) in substitution ${\(name)\(op)…}")
        }
    }

    /// BuildKit's patterns: `\` may only escape `*`, `?`, `\` (or `}` and `/`, which it drops).
    static func validatePattern(_ pattern: String) throws {
        var chars = pattern.makeIterator()
        while let c = chars.next() {
            guard c == "\\" else { continue }
            let next = chars.next()
            guard let next, ["*", "?", "\\", "}", "/"].contains(next) else {
                throw ExpansionError(
                    description:
                        "invalid pattern (\(pattern)) in substitution: invalid escape '\\\(next.map(String.init) ?? "")'"
                )
            }
        }
    }

    /// Removes the shortest/longest prefix (`#`) or suffix (`%`) matching a glob pattern.
    /// Pattern operators try every prefix/suffix/position (quadratic in the value's length); a cap keeps a
    /// hostile Dockerfile from stalling the build.
    static let maximumPatternInput = 16 << 10

    static func checkPatternInput(_ value: String?, name: String) throws {
        guard (value?.utf8.count ?? 0) <= maximumPatternInput else {
            throw ExpansionError(
                description: "${\(name)…}: pattern operators take values up to \(maximumPatternInput) bytes")
        }
    }

    static func trim(_ value: String, pattern: String, fromStart: Bool, longest: Bool) -> String {
        let chars = Array(value)
        let lengths = Array(0...chars.count)
        for length in (longest ? lengths.reversed() : lengths) {
            let piece = fromStart ? String(chars[0..<length]) : String(chars[(chars.count - length)...])
            if Glob.matches(pattern, piece, brackets: false) {
                return fromStart ? String(chars[length...]) : String(chars[..<(chars.count - length)])
            }
        }
        return value
    }

    /// BuildKit's `${v/p/r}` and `${v//p/r}` (Go regexp, greedy): the leftmost match, longest at its place,
    /// replaced; for `//` every match after it too, including empty ones (an empty pattern puts `r` before each
    /// character and at the end), except an empty match right where the previous match ended.
    static func replace(_ value: String, pattern: String, with replacement: String, all: Bool) -> String {
        let chars = Array(value)
        var result = ""
        var index = 0
        var replaced = false
        var lastMatchEnd = -1
        while index <= chars.count {
            if !replaced || all {
                var matchLength: Int?
                for end in stride(from: chars.count, through: index, by: -1)
                where Glob.matches(pattern, String(chars[index..<end]), brackets: false) {
                    matchLength = end - index
                    break
                }
                if let length = matchLength, length > 0 || index != lastMatchEnd {
                    result += replacement
                    replaced = true
                    lastMatchEnd = index + length
                    if length > 0 {
                        index += length
                        continue
                    }
                }
            }
            if index < chars.count { result.append(chars[index]) }
            index += 1
        }
        return result
    }
}

/// Shell-style glob matching (`*`, `?`, `[…]`, escapes) of a whole string, iterative (no recursion). BuildKit's
/// `${v#…}`/`${v/…}` patterns have no bracket expressions (`brackets: false`); file globs (Go's filepath.Match) do.
enum Glob {
    static func matches(_ pattern: String, _ text: String, brackets: Bool = true) -> Bool {
        let p = Array(pattern)
        let t = Array(text)
        var pi = 0
        var ti = 0
        var starP = -1
        var starT = 0
        while ti < t.count {
            if pi < p.count, p[pi] == "*" {
                starP = pi
                starT = ti
                pi += 1
                continue
            }
            if pi < p.count, let (matched, width) = single(p, pi, t[ti], brackets: brackets), matched {
                pi += width
                ti += 1
                continue
            }
            if starP >= 0 {
                pi = starP + 1
                starT += 1
                ti = starT
                continue
            }
            return false
        }
        while pi < p.count, p[pi] == "*" { pi += 1 }
        return pi == p.count
    }

    /// Whether a file glob is well formed by Go's filepath.Match rules (which BuildKit's COPY uses): every
    /// `\` escapes a character, every `[` closes, a range holds at least one item, an item is not `-` or
    /// `]` unescaped, and a range `lo-hi` has lo <= hi.
    static func isWellFormed(_ pattern: String) -> Bool {
        let p = Array(pattern)
        var i = 0
        func escaped() -> Character? {
            guard i < p.count, p[i] != "-", p[i] != "]" else { return nil }
            if p[i] == "\\" {
                i += 1
                guard i < p.count else { return nil }
            }
            defer { i += 1 }
            return p[i]
        }
        while i < p.count {
            switch p[i] {
            case "\\":
                guard i + 1 < p.count else { return false }
                i += 2
            case "[":
                i += 1
                if i < p.count, p[i] == "^" { i += 1 }
                var items = 0
                while true {
                    guard i < p.count else { return false }
                    if p[i] == "]" && items > 0 {
                        i += 1
                        break
                    }
                    guard let low = escaped() else { return false }
                    if i < p.count, p[i] == "-" {
                        i += 1
                        guard let high = escaped(), low <= high else { return false }
                    }
                    items += 1
                }
            default:
                i += 1
            }
        }
        return true
    }

    /// Whether the pattern element at `i` matches `c`, and how many pattern characters it spans.
    static func single(_ p: [Character], _ i: Int, _ c: Character, brackets: Bool) -> (Bool, Int)? {
        switch p[i] {
        case "?": return (true, 1)
        case "\\":
            guard i + 1 < p.count else { return (c == "\\", 1) }
            return (p[i + 1] == c, 2)
        case "[" where brackets:
            var j = i + 1
            var negate = false
            // Go's filepath.Match negates with `^` only (`!` is a plain character there).
            if j < p.count, p[j] == "^" {
                negate = true
                j += 1
            }
            var matched = false
            var first = true
            while j < p.count, p[j] != "]" || first {
                first = false
                var low = p[j]
                if low == "\\", j + 1 < p.count {
                    j += 1
                    low = p[j]
                }
                var high = low
                if j + 2 < p.count, p[j + 1] == "-", p[j + 2] != "]" {
                    high = p[j + 2]
                    j += 2
                }
                if low <= c && c <= high { matched = true }
                j += 1
            }
            guard j < p.count else { return (p[i] == c, 1) }  // no closing ]: a literal [
            return (matched != negate, j - i + 1)
        default:
            return (p[i] == c, 1)
        }
    }
}
