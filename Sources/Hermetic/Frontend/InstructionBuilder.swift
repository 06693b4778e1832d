import Foundation

/// Turns one logical line into a typed `Instruction`: keyword, flags, arguments (JSON or shell form),
/// heredocs. Rules and messages follow BuildKit's parser and instruction packages.
struct InstructionBuilder {
    let file: String
    let escape: Character

    private func fail(_ line: Int, _ message: String) -> DockerfileError {
        DockerfileError(file: file, line: line, message: message)
    }

    static let flagsByInstruction: [String: [String: FlagKind]] = [
        "from": ["platform": .string],
        "copy": [
            "from": .string, "chown": .string, "chmod": .string, "link": .bool, "parents": .bool,
            "exclude": .repeated,
        ],
        // BuildKit's parseAdd: no --from and no --parents (those are COPY's).
        "add": [
            "chown": .string, "chmod": .string, "link": .bool, "exclude": .repeated, "checksum": .string,
            "keep-git-dir": .bool, "unpack": .bool,
        ],
        "run": ["mount": .repeated, "network": .string, "security": .string],
        "healthcheck": [
            "interval": .string, "timeout": .string, "start-period": .string,
            "start-interval": .string, "retries": .string,
        ],
    ]

    enum FlagKind { case string, bool, repeated }

    struct Flags {
        var values: [String: [String]] = [:]
        func string(_ name: String) -> String? { values[name]?.last }
        func all(_ name: String) -> [String] { values[name] ?? [] }
        func bool(_ name: String) -> Bool? {
            guard let value = values[name]?.last else { return nil }
            return value != "false"
        }
    }

    func build(_ logical: LogicalLine, heredocReader: inout LineReader) throws(DockerfileError) -> Instruction {
        let line = logical.startLine
        // BuildKit trims the whole logical line before splitting off the keyword.
        let text = logical.text.trimmingCharacters(in: .whitespaces)
        let keywordText = String(text.prefix { !$0.isWhitespace })
        let keyword = keywordText.lowercased()
        var rest = String(text.dropFirst(keywordText.count).drop(while: { $0.isWhitespace }))
        let known = [
            "from", "arg", "env", "label", "copy", "add", "run", "workdir", "user", "cmd", "entrypoint",
            "shell", "expose", "volume", "stopsignal", "healthcheck", "onbuild", "maintainer",
        ]
        guard known.contains(keyword) else {
            // As BuildKit's parser, with its suggestion (the names in byte order, so a tie is always broken alike).
            let suggestion = Suggestion.nearest(to: keywordText, among: known.sorted()).map { " (did you mean \($0)?)" }
            throw fail(line, "unknown instruction: \(keywordText)\(suggestion ?? "")")
        }
        let flags = try extractFlags(&rest, keyword: keyword, line: line)
        var heredocs: [Heredoc] = []
        // Bodies as written (`<<-` tabs kept), for an ONBUILD trigger's text.
        var writtenBodies: [String] = []
        if canContainHeredoc(keyword: keyword, rest: rest) {
            let markers: [HeredocMarker]
            do {
                markers = try Self.heredocMarkers(inLine: text)
            } catch {
                throw fail(line, "\(error)")
            }
            for marker in markers {
                let body = try heredocReader.readHeredoc(name: marker.name, chomp: marker.chomp, instructionLine: line)
                writtenBodies.append(body)
                heredocs.append(
                    Heredoc(
                        name: marker.name, content: marker.chomp ? Self.removingLeadingTabs(body) : body,
                        expand: marker.expand, chomp: marker.chomp, fileDescriptor: marker.fileDescriptor))
            }
        }
        let range = SourceRange(
            start: SourcePosition(line: line, column: 1),
            end: SourcePosition(line: max(line, heredocReader.currentLine), column: 1))
        let originalWithFlags = text.trimmingCharacters(in: .whitespaces)
        let kind = try makeKind(
            keyword: keyword, rest: rest, flags: flags, heredocs: heredocs, writtenBodies: writtenBodies, line: line)
        return Instruction(
            kind: kind, range: range, original: originalWithFlags,
            heredocText: zip(heredocs, writtenBodies).map { "\n" + $1 + $0.name }.joined())
    }

    /// BuildKit reads heredocs for the shell forms of RUN, COPY and ADD, and of those as ONBUILD triggers.
    private func canContainHeredoc(keyword: String, rest: String) -> Bool {
        var keyword = keyword
        var rest = rest
        if keyword == "onbuild" {
            let trigger = rest.drop { $0.isWhitespace }
            let triggerKeyword = trigger.prefix { !$0.isWhitespace }
            keyword = triggerKeyword.lowercased()
            rest = String(trigger.dropFirst(triggerKeyword.count).drop { $0.isWhitespace })
            while rest.hasPrefix("--") {
                let word = Self.firstQuotedWord(rest, escape: escape)
                rest = String(rest.dropFirst(word.count).drop { $0.isWhitespace })
                if word == "--" { break }
            }
        }
        return ["run", "copy", "add"].contains(keyword) && !isJSONForm(rest)
    }

    /// `<<-`: leading tabs go from every line of the body (BuildKit's ChompHeredocContent).
    static func removingLeadingTabs(_ body: String) -> String {
        body.split(separator: "\n", omittingEmptySubsequences: false).map { $0.drop { $0 == "\t" } }
            .joined(separator: "\n")
    }

    private func makeKind(
        keyword: String, rest: String, flags: Flags, heredocs: [Heredoc], writtenBodies: [String], line: Int
    ) throws(DockerfileError) -> InstructionKind {
        let upper = keyword.uppercased()
        switch keyword {
        case "from":
            let words = Self.whitespaceWords(rest)
            guard words.count == 1 || (words.count == 3 && words[1].lowercased() == "as") else {
                throw fail(line, "FROM requires either one or three arguments")
            }
            return .from(
                FromInstruction(
                    image: words[0], stageName: words.count == 3 ? words[2] : nil,
                    platform: flags.string("platform")))
        case "arg":
            let words = try quotedWords(rest, line: line)
            guard !words.isEmpty else { throw fail(line, "ARG requires at least one argument") }
            return .arg(
                try words.map { word throws(DockerfileError) in
                    if let eq = word.firstIndex(of: "=") {
                        let name = String(word[..<eq])
                        guard !name.isEmpty else { throw fail(line, "ARG names can not be blank") }
                        return ArgDeclaration(name: name, defaultValue: String(word[word.index(after: eq)...]))
                    }
                    return ArgDeclaration(name: word, defaultValue: nil)
                })
        case "env", "label":
            let pairs = try nameValuePairs(rest, instruction: upper, line: line)
            return keyword == "env" ? .env(pairs) : .label(pairs)
        case "maintainer":
            guard !rest.isEmpty else { throw fail(line, "MAINTAINER requires exactly one argument") }
            return .maintainer(rest.trimmingCharacters(in: .whitespaces))
        case "workdir", "user", "stopsignal":
            let value = rest.trimmingCharacters(in: .whitespaces)
            guard !value.isEmpty else { throw fail(line, "\(upper) requires exactly one argument") }
            if keyword == "workdir" { return .workdir(value) }
            if keyword == "user" { return .user(value) }
            return .stopSignal(value)
        case "expose":
            let words = Self.whitespaceWords(rest)
            guard !words.isEmpty else { throw fail(line, "EXPOSE requires at least one argument") }
            return .expose(words)
        case "volume":
            let words = try jsonList(rest, line: line) ?? Self.whitespaceWords(rest)
            guard !words.isEmpty else { throw fail(line, "VOLUME requires at least one argument") }
            // BuildKit's parseVolume trims each entry (an entry left empty is refused when it is dispatched).
            return .volume(words.map { $0.trimmingCharacters(in: .whitespaces) })
        case "shell":
            // BuildKit: nothing at all is "at least one argument"; words that are not JSON are the other error.
            guard !rest.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw fail(line, "SHELL requires at least one argument")
            }
            guard let words = try jsonList(rest, line: line) else {
                throw fail(line, "SHELL requires the arguments to be in JSON form")
            }
            guard !words.isEmpty else { throw fail(line, "SHELL requires at least one argument") }
            return .shell(words)
        case "cmd":
            return .cmd(try commandForm(rest, line: line))
        case "entrypoint":
            return .entrypoint(try commandForm(rest, line: line))
        case "run":
            guard !rest.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw fail(line, "RUN requires at least one argument")
            }
            if let network = flags.string("network"), !["default", "none", "host"].contains(network) {
                throw fail(
                    line, "RUN --network=\(network): invalid network mode \"\(network)\" (default, none or host)")
            }
            if let security = flags.string("security"), !["sandbox", "insecure"].contains(security) {
                throw fail(line, "RUN --security=\(security): expected sandbox or insecure")
            }
            return .run(
                RunInstruction(
                    command: heredocs.isEmpty ? try commandForm(rest, line: line) : .shell(rest), heredocs: heredocs,
                    mounts: flags.all("mount"), network: flags.string("network"), security: flags.string("security")))
        case "copy", "add":
            return .copy(
                try copyInstruction(keyword: keyword, rest: rest, flags: flags, heredocs: heredocs, line: line))
        case "healthcheck":
            return .healthcheck(try healthcheck(rest, flags: flags, line: line))
        case "onbuild":
            // As BuildKit's parseOnBuild: a trigger with heredocs carries them, each as "\n" + body + name.
            let trigger =
                rest.trimmingCharacters(in: .whitespaces)
                + zip(heredocs, writtenBodies).map { "\n" + $1 + $0.name }.joined()
            let triggerKeyword = String(trigger.prefix { !$0.isWhitespace }).uppercased()
            guard !trigger.isEmpty else { throw fail(line, "ONBUILD requires at least one argument") }
            switch triggerKeyword {
            case "ONBUILD": throw fail(line, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            case "FROM", "MAINTAINER": throw fail(line, "\(triggerKeyword) isn't allowed as an ONBUILD trigger")
            default: break
            }
            // The trigger must itself be a valid instruction.
            var probe = try LineReader(bytes: Array(trigger.utf8), file: file)
            if let logical = try probe.nextLogicalLine(escape: escape) {
                do {
                    _ = try build(
                        LogicalLine(text: logical.text, startLine: line, endLine: line), heredocReader: &probe)
                } catch {
                    throw fail(line, "ONBUILD trigger: \(error.message)")
                }
            }
            return .onbuild(trigger)
        default:
            throw fail(line, "unknown instruction: \(upper)")
        }
    }

    private func copyInstruction(keyword: String, rest: String, flags: Flags, heredocs: [Heredoc], line: Int)
        throws(DockerfileError) -> CopyInstruction
    {
        let upper = keyword.uppercased()
        var words: [String]
        if let last = (try jsonList(rest, line: line) ?? Self.whitespaceWords(rest)).last, heredocMarker(last) != nil {
            throw fail(line, "\(upper) cannot accept a heredoc as a destination")
        }
        if heredocs.isEmpty {
            words = try jsonList(rest, line: line) ?? Self.whitespaceWords(rest)
        } else {
            // BuildKit looks for heredocs again in the whitespace-split arguments: `<<eo'f'` is the source
            // named `eof`, while `<< EOF` (two words) names the files `<<` and `EOF`.
            words = Self.whitespaceWords(rest).map { word in
                heredocMarker(word)?.name ?? word
            }
        }
        guard words.count >= 2 else {
            throw fail(
                line,
                "\(upper) requires at least two arguments, but only one was provided. Destination could not be determined."
            )
        }
        let destination = words.removeLast()
        // What a source names (a URL, a git repository) is judged once it is expanded and unquoted, when its
        // stage is planned or run (CopyInstruction.sourceRuleViolation), as BuildKit's dispatchCopy does.
        return CopyInstruction(
            isAdd: keyword == "add", sources: words, destination: destination, heredocs: heredocs,
            from: flags.string("from"), chown: flags.string("chown"), chmod: flags.string("chmod"),
            link: flags.bool("link") ?? false, parents: flags.bool("parents") ?? false, excludes: flags.all("exclude"),
            checksum: flags.string("checksum"), keepGitDir: flags.bool("keep-git-dir") ?? false,
            unpack: flags.bool("unpack"))
    }

    /// Whether an expanded COPY/ADD source names something over the network (HTTP(S) or git).
    static func isRemote(_ source: String) -> Bool {
        CopySourceKind(of: source) != .local
    }

    private func healthcheck(_ rest: String, flags: Flags, line: Int) throws(DockerfileError) -> HealthcheckInstruction
    {
        let words = Self.whitespaceWords(rest)
        guard let first = words.first else { throw fail(line, "HEALTHCHECK requires at least one argument") }
        var result = HealthcheckInstruction(
            command: nil, interval: flags.string("interval"),
            timeout: flags.string("timeout"), startPeriod: flags.string("start-period"),
            startInterval: flags.string("start-interval"), retries: flags.string("retries"))
        switch first.uppercased() {
        case "NONE":
            guard words.count == 1 else { throw fail(line, "HEALTHCHECK NONE takes no arguments") }
            guard flags.values.isEmpty else { throw fail(line, "HEALTHCHECK NONE takes no flags") }
            return result
        case "CMD":
            let command = String(rest.drop { !$0.isWhitespace }.drop { $0.isWhitespace })
            guard !command.isEmpty else { throw fail(line, "Missing command after HEALTHCHECK CMD") }
            result.command = try commandForm(command, line: line)
            // BuildKit checks durations and retries when it parses the instruction, in every stage.
            _ = try HealthcheckConversion.config(result, shell: nil, line: line, file: file)
            return result
        default:
            throw fail(line, "Unknown type \"\(first)\" in HEALTHCHECK (try CMD)")
        }
    }

    // MARK: Pieces

    /// Leading `--name[=value]` words. A flag the instruction does not take is an error.
    private func extractFlags(_ rest: inout String, keyword: String, line: Int) throws(DockerfileError) -> Flags {
        var flags = Flags()
        let allowed = Self.flagsByInstruction[keyword] ?? [:]
        while rest.hasPrefix("--") {
            let word = Self.firstQuotedWord(rest, escape: escape)
            rest = String(rest.dropFirst(word.count).drop(while: { $0.isWhitespace }))
            if word == "--" { break }
            let body = Self.flagText(word).dropFirst(2)
            let name = String(body.prefix { $0 != "=" })
            let value: String? = body.contains("=") ? String(body.drop { $0 != "=" }.dropFirst()) : nil
            guard let kind = allowed[name] else {
                throw fail(line, "unknown flag: --\(name) for \(keyword.uppercased())")
            }
            switch kind {
            case .bool:
                // Go's strconv.ParseBool spellings, as BuildKit's flag parser accepts.
                let truthy: Set<String> = ["1", "t", "T", "TRUE", "true", "True"]
                let falsy: Set<String> = ["0", "f", "F", "FALSE", "false", "False"]
                guard value == nil || truthy.contains(value ?? "") || falsy.contains(value ?? "") else {
                    throw fail(line, "--\(name) takes true or false, not \"\(value ?? "")\"")
                }
                flags.values[name, default: []].append(value.map { truthy.contains($0) ? "true" : "false" } ?? "true")
            case .string, .repeated:
                guard let value else { throw fail(line, "missing a value for flag: --\(name)") }
                if kind == .string, flags.values[name] != nil {
                    throw fail(line, "duplicate flag specified: --\(name)")
                }
                flags.values[name, default: []].append(value)
            }
        }
        return flags
    }

    /// The first word, quotes and escapes kept (so `--flag="a b"` stays one word).
    static func firstQuotedWord(_ text: String, escape: Character) -> String {
        var quote: Character?
        var result = ""
        var escaped = false
        for ch in text {
            if escaped {
                result.append(ch)
                escaped = false
                continue
            }
            if ch == escape, quote != "'" {
                result.append(ch)
                escaped = true
                continue
            }
            if let q = quote {
                if ch == q { quote = nil }
            } else if ch == "\"" || ch == "'" {
                quote = ch
            } else if ch.isWhitespace {
                break
            }
            result.append(ch)
        }
        return result
    }

    /// A flag word as BuildKit reads it: quotes removed wherever they stand (`--mount=id="a b"` is
    /// `--mount=id=a b`), a backslash keeps the next character literally, a trailing backslash is dropped.
    static func flagText(_ word: String) -> String {
        var result = ""
        var quote: Character?
        var escaped = false
        for ch in word {
            if escaped {
                result.append(ch)
                escaped = false
            } else if ch == "\\" {
                escaped = true
            } else if let open = quote {
                if ch == open { quote = nil } else { result.append(ch) }
            } else if ch == "\"" || ch == "'" {
                quote = ch
            } else {
                result.append(ch)
            }
        }
        return result
    }

    static func whitespaceWords(_ text: String) -> [String] {
        text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }).map(String.init)
    }

    /// Words split on unquoted blanks, quotes and escapes kept for the expansion pass (BuildKit's parseWords).
    private func quotedWords(_ text: String, line: Int) throws(DockerfileError) -> [String] {
        var words: [String] = []
        var rest = Substring(text)
        while true {
            rest = rest.drop { $0.isWhitespace }
            if rest.isEmpty { break }
            let word = Self.firstQuotedWord(String(rest), escape: escape)
            words.append(word)
            rest = rest.dropFirst(word.count)
        }
        return words
    }

    /// ENV and LABEL: `k=v k2=v2`, or the legacy `key value with spaces`.
    private func nameValuePairs(_ text: String, instruction: String, line: Int) throws(DockerfileError) -> [KeyValue] {
        let words = try quotedWords(text, line: line)
        guard let first = words.first else { throw fail(line, "\(instruction) requires at least one argument") }
        if !first.contains("=") {
            let value = String(text.drop { !$0.isWhitespace }.drop { $0.isWhitespace })
            guard !value.isEmpty else {
                throw fail(line, "\(instruction) must have two arguments")
            }
            return [KeyValue(key: first, value: value)]
        }
        return try words.map { word throws(DockerfileError) in
            guard let eq = word.firstIndex(of: "=") else {
                throw fail(line, "Syntax error - can't find = in \"\(word)\". Must be of the form: name=value")
            }
            let key = String(word[..<eq])
            guard !key.isEmpty else { throw fail(line, "\(instruction) names can not be blank") }
            return KeyValue(key: key, value: String(word[word.index(after: eq)...]))
        }
    }

    /// A JSON array of strings, or nil if the text is not a JSON array. A JSON array holding anything but
    /// strings is an error, as in BuildKit (it does not fall back to the shell form).
    private func jsonList(_ text: String, line: Int) throws(DockerfileError) -> [String]? {
        switch JSONArrayForm.read(text.trimmingCharacters(in: .whitespaces)) {
        case .notJSON: return nil
        case .notStrings: throw fail(line, "when using JSON array syntax, arrays must be comprised of strings only")
        case .strings(let words): return words
        }
    }

    /// BuildKit looks for heredocs only in the shell form.
    private func isJSONForm(_ text: String) -> Bool {
        ((try? jsonList(text, line: 0)) ?? nil) != nil
    }

    private func commandForm(_ text: String, line: Int) throws(DockerfileError) -> CommandForm {
        if let list = try jsonList(text, line: line) { return .exec(list) }
        return .shell(text)
    }

    struct HeredocMarker {
        var name: String
        var chomp: Bool
        var expand: Bool
        var fileDescriptor: Int?
    }

    /// BuildKit's `ParseHeredoc`: a word matching `^(\d*)<<(-?)\s*([^<]*)$` whose rest lexes to exactly one
    /// word is a heredoc named by that word (`<<eo'f'` is `eof`, `<<eo\'f` is `eo'f`, `<<'one two'` is
    /// `one two`, `<< -EOF` is `-EOF`). Its body is expanded unless part of the rest was quoted: the rest is
    /// lexed with and without keeping quotes, and the quote counts differ exactly when a quote quoted
    /// something (an escaped quote counts the same both ways).
    static func parseHeredoc(_ word: String) throws -> HeredocMarker? {
        var rest = Substring(word).unicodeScalars
        let digits = String(String.UnicodeScalarView(rest.prefix { ("0"..."9").contains($0) }))
        rest = rest.dropFirst(digits.unicodeScalars.count)
        guard rest.starts(with: "<<".unicodeScalars) else { return nil }
        rest = rest.dropFirst(2)
        let chomp = rest.first == "-"
        if chomp { rest = rest.dropFirst() }
        rest = rest.drop { [" ", "\t", "\n", "\r", "\u{0C}"].contains($0) }  // RE2's \s
        guard !rest.isEmpty, !rest.contains("<") else { return nil }
        let text = String(String.UnicodeScalarView(rest))
        let lookup: (String) -> String? = { _ in nil }
        let words = try ShellLexer(escape: "\\", mode: .init(skipUnsetEnv: true)).processWords(text, lookup: lookup)
        guard words.count == 1, let name = words.first else { return nil }
        let raw = try ShellLexer(escape: "\\", mode: .init(rawQuotes: true, skipUnsetEnv: true))
            .processWords(text, lookup: lookup)
        guard raw.count == 1, let rawName = raw.first else {
            throw ShellLexer.ExpansionError(
                description: "internal lexing of heredoc produced inconsistent results: \(text)")
        }
        func quotes(_ s: String) -> Int { s.unicodeScalars.filter { $0 == "'" || $0 == "\"" }.count }
        return HeredocMarker(
            name: name, chomp: chomp, expand: quotes(name) == quotes(rawName),
            fileDescriptor: digits.isEmpty ? nil : Int(digits))
    }

    /// `parseHeredoc`, with a word that cannot be lexed taken as no heredoc (BuildKit's `MustParseHeredoc`).
    func heredocMarker(_ word: String) -> HeredocMarker? {
        (try? Self.parseHeredoc(word)) ?? nil
    }

    /// BuildKit's `heredocsFromLine`: the heredocs among the words of the whole instruction line, split by a
    /// lexer that keeps quotes, escapes and unset variables as written and whose escape is always `\`. A
    /// line it cannot split (an unterminated quote) has no heredocs.
    static func heredocMarkers(inLine line: String) throws -> [HeredocMarker] {
        guard line.contains("<<") else { return [] }
        let lexer = ShellLexer(escape: "\\", mode: .init(rawQuotes: true, rawEscapes: true, skipUnsetEnv: true))
        guard let words = try? lexer.processWords(line, lookup: { _ in nil }) else { return [] }
        return try words.compactMap { try parseHeredoc($0) }
    }
}
