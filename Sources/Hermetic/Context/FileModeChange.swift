/// A `COPY/ADD --chmod` value: an octal mode, or (as newer BuildKit takes it) a symbolic mode in chmod(1)'s
/// grammar, applied to each copied file's own mode. The symbolic rules are BSD `setmode`'s with a umask of
/// 0, which BuildKit uses: `[ugoa]*([-+=]([rwxXst]*|[ugo]))+` clauses separated by commas; no `who` means
/// all; `X` adds execute only with `+`, and only to directories and files that already have an execute
/// bit; `s` is ignored for `o` alone, `t` too; `=` clears the named classes (and set-id bits) first.
public enum FileModeChange: Sendable, Hashable {
    case absolute(UInt32)
    case symbolic([Clause])

    public struct Clause: Sendable, Hashable {
        /// Bits of the classes named (`u` 0o4700, `g` 0o2070, `o` 0o0007); 0 when none was named.
        var who: UInt32
        var actions: [Action]
    }

    struct Action: Sendable, Hashable {
        var op: Character
        /// Permission bits named by r, w, x, s, t (before masking by `who`).
        var bits: UInt32
        var executeIfSearchable: Bool
        /// A class to copy from (`u`, `g` or `o`), instead of bits.
        var copyFrom: Character?
        var sticky: Bool
    }

    /// BuildKit's texts: a value that looks numeric but is not an octal mode up to 07777, or one that is
    /// not a symbolic mode.
    public enum ParseError: Error, Equatable {
        case notOctal
        case invalidSyntax
    }

    public static func parse(_ text: String) throws(ParseError) -> FileModeChange {
        guard let first = text.unicodeScalars.first else { throw .invalidSyntax }
        if ("0"..."9").contains(first) {
            guard text.unicodeScalars.allSatisfy({ ("0"..."7").contains($0) }), let value = UInt32(text, radix: 8),
                value <= 0o7777
            else { throw .notOctal }
            return .absolute(value)
        }
        var clauses: [Clause] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            clauses.append(try clause(Array(part)))
        }
        return .symbolic(clauses)
    }

    private static func clause(_ characters: [Character]) throws(ParseError) -> Clause {
        var index = 0
        var who: UInt32 = 0
        while index < characters.count,
            let mask = classMask(characters[index]) ?? (characters[index] == "a" ? 0o6777 : nil)
        {
            who |= mask
            index += 1
        }
        var actions: [Action] = []
        while index < characters.count {
            let op = characters[index]
            guard op == "+" || op == "-" || op == "=" else { throw .invalidSyntax }
            index += 1
            var action = Action(op: op, bits: 0, executeIfSearchable: false, copyFrom: nil, sticky: false)
            if index < characters.count, ["u", "g", "o"].contains(characters[index]) {
                action.copyFrom = characters[index]
                index += 1
            } else {
                while index < characters.count, !["+", "-", "="].contains(characters[index]) {
                    switch characters[index] {
                    case "r": action.bits |= 0o444
                    case "w": action.bits |= 0o222
                    case "x": action.bits |= 0o111
                    case "X": action.executeIfSearchable = op == "+"
                    case "s": if who == 0 || who & ~0o0007 != 0 { action.bits |= 0o6000 }
                    case "t":
                        if who == 0 || who & ~0o0007 != 0 {
                            action.bits |= 0o1000
                            action.sticky = true
                        }
                    default: throw .invalidSyntax
                    }
                    index += 1
                }
            }
            actions.append(action)
        }
        guard !actions.isEmpty else { throw .invalidSyntax }
        return Clause(who: who, actions: actions)
    }

    private static func classMask(_ character: Character) -> UInt32? {
        switch character {
        case "u": 0o4700
        case "g": 0o2070
        case "o": 0o0007
        default: nil
        }
    }

    /// The mode a copied entry gets, from its own permission bits.
    public func apply(to original: UInt32, isDirectory: Bool) -> UInt32 {
        switch self {
        case .absolute(let mode):
            return mode
        case .symbolic(let clauses):
            var mode = original & 0o7777
            for clause in clauses {
                for action in clause.actions {
                    mode = Self.apply(action, who: clause.who, to: mode, original: original, isDirectory: isDirectory)
                }
            }
            return mode
        }
    }

    private static func apply(_ action: Action, who: UInt32, to mode: UInt32, original: UInt32, isDirectory: Bool)
        -> UInt32
    {
        let classes = who == 0 ? 0o6777 : who
        var bits: UInt32
        if let source = action.copyFrom {
            let shift: UInt32 = source == "u" ? 6 : source == "g" ? 3 : 0
            let value = (mode >> shift) & 0o7
            bits = (value << 6 | value << 3 | value) & classes & 0o777
        } else {
            bits = action.bits & (classes | (action.sticky ? 0o1000 : 0))
        }
        if action.executeIfSearchable && (isDirectory || original & 0o111 != 0) {
            bits |= 0o111 & classes
        }
        switch action.op {
        case "+": return mode | bits
        case "-": return mode & ~bits
        default:
            // Copying a class replaces only permission bits; named bits replace the set-id bits too.
            let cleared = action.copyFrom != nil ? classes & 0o777 : classes | (action.sticky ? 0o1000 : 0)
            return (mode & ~cleared) | bits
        }
    }
}
