import Testing

@testable import Hermetic

/// Expansion and quote removal as BuildKit's shell lexer does it; rows re-express the behaviour of its
/// `envVarTest` / `wordsTest` vectors and the Dockerfile reference's variable substitution section.
@Suite struct ShellLexerTests {
    static let environment: [String: String] = [
        "PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": "", "FOO": "xxyy",
        "PATHS": "/tmp/tmp/bar.txt",
        "STARS": "a***yy*", "URL": "http://example.com", "SP": "a b  c", "ONE": "1", "é": "acute",
        "éa": "acute-a",
    ]
    static func lookup(_ name: String) -> String? { environment[name] }

    /// (input, expected) with `\` as the escape character; nil: must throw.
    static let backslashRows: [(String, String?)] = [
        ("hello", "hello"),
        ("he'll'o", "hello"),
        ("he'llo", nil),
        ("he\\'llo", "he'llo"),
        ("he\\\\'llo", nil),
        ("abc\\\\def", "abc\\def"),
        ("\"hello\"", "hello"),
        ("\"hel'lo\"", "hel'lo"),
        ("'hel\"lo'", "hel\"lo"),
        ("he\\\"llo", "he\"llo"),
        ("\"he\\\"llo\"", "he\"llo"),
        ("\"he\\llo\"", "he\\llo"),
        ("\"he\\\\llo\"", "he\\llo"),
        ("hel\\lo", "hello"),
        ("hello\\", "hello"),
        ("\"hello", nil),
        ("'hello", nil),
        ("$.", "$."),
        ("he$.x", "he$.x"),
        ("he$", "he$"),
        ("$1", ""),
        ("he$1x", "hex"),
        ("he$12x", "hex"),
        ("$@x", "x"),
        ("a$$b", "ab"),
        ("he$pwd.", "he."),
        ("he$PWD", "he/home"),
        ("he\\$PWD", "he$PWD"),
        ("he\\\\$PWD", "he\\/home"),
        ("\"he\\$PWD\"", "he$PWD"),
        ("'he\\$PWD'", "he\\$PWD"),
        ("he\\${}", "he${}"),
        ("he${}", nil),
        ("he${", nil),
        ("he${PWD", nil),
        ("he${hi}xx", "hexx"),
        ("he${PWD}", "he/home"),
        ("he${.}", nil),
        ("${:}", nil),
        ("${:-bbb}", nil),
        ("${{aaa}", nil),
        ("${aaa}}", "}"),
        ("${aaa}xyz}", "xyz}"),
        ("'he${XX}'", "he${XX}"),
        ("\"he${PWD}\"", "he/home"),
        ("\"he'$PWD'\"", "he'/home'"),
        ("'\"hello\"'", "\"hello\""),
        ("$KOREAN", "한국어"),
        ("안'녕'하세요", "안녕하세요"),
        ("안녕\\'하세요", "안녕'하세요"),
        // :- and -
        ("he${XXX:-000}xx", "he000xx"),
        ("he${PWD:-000}xx", "he/homexx"),
        ("he${NULL:-000}xx", "he000xx"),
        ("he${NULL-000}xx", "hexx"),
        ("he${XXX-000}xx", "he000xx"),
        ("he${XXX:-$PWD}xx", "he/homexx"),
        ("he${XXX:-${PWD:-yyy}}xx", "he/homexx"),
        ("he${XXX:-${YYY:-yyy}}xx", "heyyyxx"),
        ("${aaa:-bbb {foo}", "bbb {foo"),
        ("${aaa:-bbb ${foo}", nil),
        ("he${XXX:-\\$PWD:}xx", "he$PWD:xx"),
        ("he${XXX:-\\${PWD}z}xx", "he${PWDz}xx"),
        ("${XXX:-'a}b'}", "a}b"),
        ("${XXX:-\"$PWD x\"}", "/home x"),
        // :+ and +
        ("he${XXX:+${PWD}}xx", "hexx"),
        ("he${PWD:+${XXX}}xx", "hexx"),
        ("he${PWD:+${SHELL}}xx", "hebashxx"),
        ("he${PWD:+000}xx", "he000xx"),
        ("he${NULL:+000}xx", "hexx"),
        ("he${NULL+000}xx", "he000xx"),
        ("he${XXX+000}xx", "hexx"),
        ("he${PWD:+${PWD}:}xx", "he/home:xx"),
        // :? and ?
        ("he${PWD?}", "he/home"),
        ("he${PWD:?}", "he/home"),
        ("he${NULL?}", "he"),
        ("he${NULL:?}", nil),
        ("he${XXX?}", nil),
        ("he${XXX:?}", nil),
        ("he${XXX:?msg}", nil),
        // unsupported modifiers
        ("he${XXX:YYY}", nil),
        ("he${PWD:=000}xx", nil),
        ("${FOO=aaa}", nil),
        // # ## % %%
        ("${FOO#*x*y}", "y"),
        ("${FOO#*}", "xxyy"),
        ("${FOO#x}", "xyy"),
        ("${FOO##*x}", "yy"),
        ("${FOO#}", "xxyy"),
        ("${FOO##}", "xxyy"),
        ("${FOO#$ONE}", "xxyy"),
        ("${FOO%y}", "xxy"),
        ("${FOO%%y*}", "xx"),
        ("${FOO%y*}", "xxy"),
        ("${FOO%}", "xxyy"),
        ("${STARS%%\\**\\*}", "a"),
        ("${STARS%\\*}", "a***yy"),
        ("${FOO#[x]}", "xxyy"),
        ("${FOO#\\q}", nil),
        ("${XXX#x}", ""),
        ("${ABC:-.}${FOO%x}${ABC:-.}", ".xxyy."),
        // / and //
        ("${PATHS/\\/tmp/}", "/tmp/bar.txt"),
        ("${PATHS//\\/tmp/}", "/bar.txt"),
        ("${PATHS/t?p/X}", "/X/tmp/bar.txt"),
        ("${PATHS//t?p/X}", "/X/X/bar.txt"),
        ("${PATHS/*\\//}", "bar.txt"),
        ("${URL/http:\\/\\//https:\\/\\/}", "https:\\/\\/example.com"),
        ("${FOO//y/Y}", "xxYY"),
        ("${FOO/y/Y}", "xxYy"),
        ("${FOO//ww}", nil),
        ("${FOO//}", nil),
        ("${FOO///}", "xxyy"),
        ("${XXX///}", ""),
        // An empty pattern matches before each character (BuildKit's TestProcessWithMatches: Go regexp).
        ("${FOO/$NULL/ww}", "wwxxyy"),
        ("${FOO//$NULL/-}", "-x-x-y-y-"),
        ("${XXX/$NULL/ww}", "ww"),
        ("${FOO//*/Z}", "Z"),
        ("${FOO/*/Z}", "Z"),
        // `:#` and `:%` are `#` and `%` (lex.go falls through from `:`).
        ("${FOO:#x}", "xyy"),
        ("${FOO:##*x}", "yy"),
        ("${FOO:%y}", "xxy"),
        ("${FOO:%%y*}", "xx"),
        ("${NULL:#x}", ""),
        ("${STARS:%\\*}", "a***yy"),
        // Special parameters inside braces are one-character names, normally unset (processName).
        ("a${#}b", "ab"),
        ("${@}${*}${?}${-}${$}${!}${0}", ""),
        ("${#:-d}", "d"),
        ("${#x}", nil),
        ("${12}", ""),
        ("${1a}", nil),
        ("${.}", nil),
        // Names are Unicode letters, digits and `_`, read scalar by scalar (unicode.IsLetter, IsDigit).
        ("$éa", "acute-a"),
        ("${é}", "acute"),
        ("$é.", "acute."),
        ("x$日本y", "x"),
        ("${٣}z", "z"),
        ("$e\u{301}", "\u{301}"),
    ]

    /// Rows whose result depends on the escape character: with the backtick, `\` is an ordinary character.
    static let backtickRows: [(String, String?)] = [
        ("c:\\windows", "c:\\windows"),
        ("a`$PWD", "a$PWD"),
        ("a``b", "a`b"),
        ("\"q`\"uote\"", "q\"uote"),
        ("\"c:\\dir\\\"", "c:\\dir\\"),
        ("he`'llo", "he'llo"),
        ("he$PWD`", "he/home"),
        ("${XXX:-`}}x", "}x"),
        ("${FOO%\\*}", "xxyy"),
        ("'a`b'", "a`b"),
    ]

    @Test(arguments: backslashRows.indices)
    func backslashEscape(row: Int) {
        let (input, expected) = Self.backslashRows[row]
        check(ShellLexer(escape: "\\"), input, expected)
    }

    @Test(arguments: backtickRows.indices)
    func backtickEscape(row: Int) {
        let (input, expected) = Self.backtickRows[row]
        check(ShellLexer(escape: "`"), input, expected)
    }

    func check(_ lexer: ShellLexer, _ input: String, _ expected: String?) {
        let result = Result { try lexer.processWord(input, lookup: Self.lookup) }
        switch (result, expected) {
        case (.success(let word), let expected?):
            #expect(word == expected, "\(input)")
        case (.failure, nil):
            break
        case (.success(let word), nil):
            Issue.record("\(input) should fail, gave \(word)")
        case (.failure(let error), let expected?):
            Issue.record("\(input) should give \(expected), threw \(error)")
        }
    }

    static let wordRows: [(String, [String])] = [
        ("hello", ["hello"]),
        ("hello world", ["hello", "world"]),
        ("  hello   world  ", ["hello", "world"]),
        ("\thello\tworld\t", ["hello", "world"]),
        ("'hello world'", ["hello world"]),
        ("\"hello world\" x", ["hello world", "x"]),
        ("hello\\ world", ["hello world"]),
        ("a\"b c\"d e", ["ab cd", "e"]),
        ("$SP", ["a", "b", "c"]),
        ("\"$SP\"", ["a b  c"]),
        ("x$SP", ["xa", "b", "c"]),
        ("'$SP'", ["$SP"]),
        ("a \"\" b", ["a", "b"]),
        ("\"\"", []),
        ("", []),
        ("$XXX b", ["b"]),
        ("${XXX:-a b}", ["a", "b"]),
        ("\"${XXX:-a b}\"", ["a b"]),
    ]

    @Test(arguments: wordRows.indices)
    func words(row: Int) throws {
        let (input, expected) = Self.wordRows[row]
        #expect(
            try ShellLexer(escape: "\\").processWords(input, lookup: Self.lookup) == expected, "\(input)")
    }

    @Test func errorMessagesAreBuildKits() {
        let lexer = ShellLexer(escape: "\\")
        func message(_ input: String) -> String {
            do {
                return try lexer.processWord(input, lookup: Self.lookup)
            } catch {
                return "\(error)"
            }
        }
        #expect(message("${XXX?}") == "XXX: is not allowed to be unset")
        #expect(message("${XXX:?}") == "XXX: is not allowed to be unset")
        #expect(message("${NULL:?}") == "NULL: is not allowed to be empty")
        #expect(message("${NULL:?message here$SHELL}") == "NULL: message herebash")
        #expect(message("${XXX?message here$SHELL}") == "XXX: message herebash")
        #expect(message("${FOO/x}") == "syntax error: missing '/' in ${}")
        #expect(
            message("'open") == "unexpected end of statement while looking for matching single-quote")
    }

    @Test func unsetAndEmptyDiffer() throws {
        let lexer = ShellLexer(escape: "\\")
        let lookup: (String) -> String? = { $0 == "E" ? "" : nil }
        #expect(try lexer.processWord("[${E-d}|${U-d}|${E:-d}|${U:-d}]", lookup: lookup) == "[|d|d|d]")
        #expect(try lexer.processWord("[${E+s}|${U+s}|${E:+s}|${U:+s}]", lookup: lookup) == "[s|||]")
    }

    /// COPY/ADD heredoc bodies (BuildKit's `SkipProcessQuotes` lexer, escape always `\\`): quotes are kept
    /// and expanded inside, and the escape character escapes whatever follows it. Rows from BuildKit's
    /// testCopyHeredocSpecialSymbols and testHeredocVarSubstitution.
    static let heredocRows: [(String, String?)] = [
        ("echo \"$PWD\" '$SHELL' \\$HOME \\n\n", "echo \"/home\" 'bash' $HOME n\n"),
        ("\"quotes in file\"\n", "\"quotes in file\"\n"),
        ("\\\n", "\n"),
        ("\\\\\n", "\\\n"),
        ("\\$\n", "$\n"),
        ("a\\\nb\n", "a\nb\n"),
        ("Hello '${SHELL}'!\n", "Hello 'bash'!\n"),
        ("Hello \"${SHELL}\"!\n", "Hello \"bash\"!\n"),
        ("${XXX:-'a b'}\n", "'a b'\n"),
        ("${XXX:-\"$PWD\"}\n", "\"/home\"\n"),
        ("it's\n", "it's\n"),
        ("trailing\\", "trailing"),
        ("${XXX\n", nil),
    ]

    @Test(arguments: heredocRows.indices)
    func heredocBody(row: Int) {
        let (input, expected) = Self.heredocRows[row]
        let result = Result { try ShellLexer.processHeredoc(input, lookup: Self.lookup) }
        switch (result, expected) {
        case (.success(let body), let expected?): #expect(body == expected, "\(input)")
        case (.failure, nil): break
        case (.success(let body), nil): Issue.record("\(input) should fail, gave \(body)")
        case (.failure(let error), let expected?): Issue.record("\(input) should give \(expected), threw \(error)")
        }
    }

    // MARK: Hostile input

    @Test func deeplyNestedDefaultsThrow() {
        let depth = 100_000
        let text = String(repeating: "${a:-", count: depth) + "x" + String(repeating: "}", count: depth)
        #expect(throws: ShellLexer.ExpansionError.self) {
            try ShellLexer(escape: "\\").processWord(text, lookup: { _ in nil })
        }
    }

    @Test func nestingUnderTheLimitWorks() throws {
        let depth = 50
        let text = String(repeating: "${a:-", count: depth) + "x" + String(repeating: "}", count: depth)
        #expect(try ShellLexer(escape: "\\").processWord(text, lookup: { _ in nil }) == "x")
    }

    @Test func tenMegabyteOutputThrows() {
        let big = String(repeating: "z", count: 1 << 16)
        let text = String(repeating: "$BIG", count: 160)  // 160 × 64 KiB = 10 MiB
        let lookup: (String) -> String? = { $0 == "BIG" ? big : nil }
        #expect(throws: ShellLexer.ExpansionError.self) {
            try ShellLexer(escape: "\\").processWord(text, lookup: lookup)
        }
        #expect(throws: ShellLexer.ExpansionError.self) {
            try ShellLexer(escape: "\\").processWords(text, lookup: lookup)
        }
        #expect(throws: ShellLexer.ExpansionError.self) {
            try ShellLexer(escape: "\\").processWord("\"" + text + "\"", lookup: lookup)
        }
        #expect(throws: ShellLexer.ExpansionError.self) {
            try ShellLexer(escape: "\\").processWord("${X:-" + text + "}", lookup: lookup)
        }
    }

    @Test(arguments: [
        "${", "${a", "${a:-", "${a:-x", "${a#", "${a/", "${a/b", "${a//b/", "\"abc", "'abc", "\"${a}",
        "${a:-\"x}",
    ])
    func unterminatedInputThrows(text: String) {
        #expect(throws: ShellLexer.ExpansionError.self) {
            try ShellLexer(escape: "\\").processWord(text, lookup: { _ in "v" })
        }
    }
}

@Suite struct GlobTests {
    @Test func fileGlobsKeepBracketExpressions() {
        #expect(Glob.matches("file[0-9].txt", "file7.txt"))
        #expect(!Glob.matches("file[^0-9].txt", "file7.txt"))
        // Go's filepath.Match: `!` is a plain character in a class, not a negation.
        #expect(Glob.matches("file[!0-9].txt", "file7.txt") && Glob.matches("file[!0-9].txt", "file!.txt"))
        #expect(!Glob.matches("file[0-9].txt", "file7.txt", brackets: false))
        #expect(Glob.matches("file[0-9].txt", "file[0-9].txt", brackets: false))
    }

    /// Go's filepath.Match ErrBadPattern cases, and patterns it accepts.
    @Test(arguments: [
        ("[", false), ("[]", false), ("[]a]", false), ("a[", false), ("\\", false), ("[a-]", false),
        ("[-a]", false), ("[z-a]", false), ("[^]", false), ("[\\", false), ("*", true), ("a?c", true),
        ("[a-z]", true), ("[^a]", true), ("[\\]]", true), ("[\\-]", true), ("\\*", true), ("[a-cx]", true),
    ])
    func wellFormedFileGlobs(pattern: String, wellFormed: Bool) {
        #expect(Glob.isWellFormed(pattern) == wellFormed, "\(pattern)")
    }
}

@Suite struct ShellLexerPatternLimitTests {
    @Test func patternOperatorsRefuseHugeValues() throws {
        let lexer = ShellLexer(escape: "\\")
        let huge = String(repeating: "a", count: 100_000)
        for word in ["${v##*x}", "${v%%x*}", "${v//a/b}"] {
            #expect(throws: (any Error).self) { try lexer.processWord(word, lookup: { _ in huge }) }
        }
        #expect(try lexer.processWord("${v##*/}", lookup: { _ in "a/b/c" }) == "c")
    }
}
