/// The JSON (exec) form of an instruction's arguments, read as BuildKit reads it: with Go's
/// `encoding/json`, so exactly RFC 8259 (no trailing commas, no single quotes, no raw control characters
/// in strings, nothing after the array), a lone UTF-16 surrogate escape decoding to U+FFFD. Text that is
/// not such an array is the shell form; an array with something other than strings is an error.
enum JSONArrayForm {
    enum Reading: Equatable {
        /// Not JSON (or not an array): the shell form.
        case notJSON
        /// A JSON array holding something other than strings.
        case notStrings
        case strings([String])
    }

    static func read(_ text: String) -> Reading {
        var parser = Parser(scalars: Array(text.unicodeScalars))
        parser.skipWhitespace()
        guard parser.peek == "[" else { return .notJSON }
        guard let value = parser.value(depth: 0) else { return .notJSON }
        parser.skipWhitespace()
        guard parser.atEnd, case .array(let items) = value else { return .notJSON }
        var strings: [String] = []
        for item in items {
            guard case .string(let string) = item else { return .notStrings }
            strings.append(string)
        }
        return .strings(strings)
    }

    private enum Value {
        case string(String)
        case array([Value])
        case other
    }

    private struct Parser {
        let scalars: [Unicode.Scalar]
        var index = 0

        var atEnd: Bool { index >= scalars.count }
        var peek: Unicode.Scalar? { atEnd ? nil : scalars[index] }

        mutating func skipWhitespace() {
            while let next = peek, next == " " || next == "\t" || next == "\n" || next == "\r" { index += 1 }
        }

        /// Nesting is bounded so hostile input cannot exhaust the stack (Go allows 10,000; past 256 levels,
        /// which no argument list has, the text is taken as the shell form).
        mutating func value(depth: Int) -> Value? {
            guard depth < 256 else { return nil }
            skipWhitespace()
            guard let next = peek else { return nil }
            switch next {
            case "[":
                index += 1
                var items: [Value] = []
                skipWhitespace()
                if peek == "]" {
                    index += 1
                    return .array(items)
                }
                while true {
                    guard let item = value(depth: depth + 1) else { return nil }
                    items.append(item)
                    skipWhitespace()
                    guard let separator = peek else { return nil }
                    index += 1
                    if separator == "]" { return .array(items) }
                    guard separator == "," else { return nil }
                }
            case "{":
                index += 1
                skipWhitespace()
                if peek == "}" {
                    index += 1
                    return .other
                }
                while true {
                    skipWhitespace()
                    guard peek == "\"", string() != nil else { return nil }
                    skipWhitespace()
                    guard peek == ":" else { return nil }
                    index += 1
                    guard value(depth: depth + 1) != nil else { return nil }
                    skipWhitespace()
                    guard let separator = peek else { return nil }
                    index += 1
                    if separator == "}" { return .other }
                    guard separator == "," else { return nil }
                }
            case "\"":
                return string().map(Value.string)
            case "t": return literal("true")
            case "f": return literal("false")
            case "n": return literal("null")
            default: return number()
            }
        }

        mutating func literal(_ word: String) -> Value? {
            for scalar in word.unicodeScalars {
                guard peek == scalar else { return nil }
                index += 1
            }
            return .other
        }

        mutating func number() -> Value? {
            func digits() -> Int {
                var count = 0
                while let next = peek, ("0"..."9").contains(next) {
                    index += 1
                    count += 1
                }
                return count
            }
            if peek == "-" { index += 1 }
            if peek == "0" {
                index += 1
            } else {
                guard let next = peek, ("1"..."9").contains(next) else { return nil }
                _ = digits()
            }
            if peek == "." {
                index += 1
                guard digits() > 0 else { return nil }
            }
            if peek == "e" || peek == "E" {
                index += 1
                if peek == "+" || peek == "-" { index += 1 }
                guard digits() > 0 else { return nil }
            }
            return .other
        }

        mutating func string() -> String? {
            index += 1  // the opening quote
            var result = String.UnicodeScalarView()
            while let next = peek {
                index += 1
                switch next {
                case "\"":
                    return String(result)
                case "\\":
                    guard let escaped = peek else { return nil }
                    index += 1
                    switch escaped {
                    case "\"", "\\", "/": result.append(escaped)
                    case "b": result.append("\u{08}")
                    case "f": result.append("\u{0C}")
                    case "n": result.append("\n")
                    case "r": result.append("\r")
                    case "t": result.append("\t")
                    case "u":
                        guard let unit = hex4() else { return nil }
                        result.append(decode(unit))
                    default: return nil
                    }
                default:
                    guard next.value >= 0x20 else { return nil }
                    result.append(next)
                }
            }
            return nil
        }

        /// A `\uXXXX` unit, joined with a following low-surrogate escape when it is a high surrogate; a
        /// surrogate without its partner is U+FFFD, as in Go.
        mutating func decode(_ unit: UInt32) -> Unicode.Scalar {
            let replacement: Unicode.Scalar = "\u{FFFD}"
            if (0xD800...0xDBFF).contains(unit) {
                let saved = index
                if peek == "\\" {
                    index += 1
                    if peek == "u" {
                        index += 1
                        if let low = hex4(), (0xDC00...0xDFFF).contains(low) {
                            return Unicode.Scalar(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)) ?? replacement
                        }
                    }
                }
                index = saved
                return replacement
            }
            return Unicode.Scalar(unit) ?? replacement
        }

        mutating func hex4() -> UInt32? {
            var value: UInt32 = 0
            for _ in 0..<4 {
                guard let next = peek, next.isASCII, let digit = UInt32(String(next), radix: 16) else { return nil }
                value = value << 4 | digit
                index += 1
            }
            return value
        }
    }
}
