/// What a COPY/ADD source names once it is expanded and unquoted: a path in the source tree, a file over
/// HTTP(S), or a git repository. BuildKit's dispatchCopy classifies the expanded source (isHTTPSource,
/// dfgitutil.ParseGitRef) when it dispatches the stage, so a quoted URL is a URL and the rules below only
/// matter for a stage the target needs.
enum CopySourceKind: Equatable {
    case local
    case http
    case git

    init(of source: String) {
        if let scheme = Self.scheme(of: source) {
            switch scheme {
            case "git", "ssh": self = .git
            case "http", "https":
                // An HTTP(S) URL is a git repository only when its path ends in `.git` (dfgitutil).
                let path = source.prefix { $0 != "?" && $0 != "#" }
                self = path.hasSuffix(".git") ? .git : .http
            default: self = .local
            }
        } else {
            self = Self.isSCPStyle(source) ? .git : .local
        }
    }

    /// The lowercased scheme of `scheme://…` (BuildKit's `^[a-zA-Z0-9]+://`).
    private static func scheme(of source: String) -> String? {
        guard let separator = source.range(of: "://") else { return nil }
        let scheme = source[..<separator.lowerBound]
        let isSchemeCharacter: (Character) -> Bool = { $0.isASCII && ($0.isLetter || $0.isNumber) }
        guard !scheme.isEmpty, scheme.allSatisfy(isSchemeCharacter) else { return nil }
        return scheme.lowercased()
    }

    /// `user@host:path`, as BuildKit's sshutil matches it: `[A-Za-z0-9_-]+@[A-Za-z0-9.-]+:`.
    private static func isSCPStyle(_ source: String) -> Bool {
        guard let at = source.firstIndex(of: "@") else { return false }
        let user = source[..<at]
        let rest = source[source.index(after: at)...]
        guard let colon = rest.firstIndex(of: ":") else { return false }
        let host = rest[..<colon]
        func isWord(_ text: Substring, extra: Set<Character>) -> Bool {
            !text.isEmpty && text.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || extra.contains($0) }
        }
        return isWord(user, extra: ["_", "-"]) && isWord(host, extra: [".", "-"])
    }
}

extension CopyInstruction {
    /// The first rule the expanded sources break, as a message for `FILE:LINE: `, or nil: COPY fetches
    /// nothing; a hermetic build refuses git sources and an unpinned URL (SPEC §8); `--checksum` takes one
    /// HTTP(S) source (BuildKit's dispatchCopy texts).
    func sourceRuleViolation() -> String? {
        // An empty value (`--checksum=$UNSET`) is no checksum, as BuildKit's `cfg.checksum != ""`.
        let checksum = self.checksum.flatMap { $0.isEmpty ? nil : $0 }
        let heredocNames = Set(heredocs.map(\.name))
        let classified = sources.map { source in
            (source, heredocNames.contains(source) ? CopySourceKind.local : CopySourceKind(of: source))
        }
        for (source, kind) in classified where kind != .local {
            guard isAdd else { return "COPY cannot fetch \(source): use ADD --checksum=sha256:…" }
            if kind == .git {
                return "ADD \(source): git sources are not supported by a hermetic build (check the repository out "
                    + "and pass it as --build-context NAME=DIR, then COPY --from=NAME)"
            }
            guard let checksum else {
                return "ADD \(source) requires --checksum=sha256:… (remote inputs must be pinned)"
            }
            guard (try? Digest(parsing: checksum)) != nil else {
                return "ADD \(source): --checksum must be sha256:<64 hex>"
            }
        }
        if checksum != nil {
            guard sources.count == 1 else { return "checksum can't be specified for multiple sources" }
            guard classified.allSatisfy({ $0.1 != .local }) else {
                return "ADD --checksum: checksum requires HTTP(S) or Git sources"
            }
        }
        return nil
    }
}
