#if canImport(Glibc)
    import Glibc
#endif

/// The builder process's own environment. Read only at the command line's edge (for `--build-arg NAME`
/// and `SOURCE_DATE_EPOCH`); nothing else in a build may look at it.
public enum ProcessEnvironment {
    public static func current() -> [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") {
                result[String(text[..<eq])] = String(text[text.index(after: eq)...])
            }
            pointer += 1
        }
        return result
    }
}

public enum SourceDateEpoch {
    /// `--source-date-epoch` wins, then `$SOURCE_DATE_EPOCH`, then 0. Must be a non-negative integer of seconds.
    public static func resolve(flag: String?, environment: [String: String]) throws(ArgumentError) -> Int64 {
        let (text, argument): (String?, String) =
            flag != nil ? (flag, "--source-date-epoch") : (environment["SOURCE_DATE_EPOCH"], "SOURCE_DATE_EPOCH")
        guard let text else { return 0 }
        guard let value = Int64(text), value >= 0, value <= 253_402_300_799 else {
            throw ArgumentError(
                argument: argument, value: text,
                reason: "must be whole seconds since 1970 (0 to 253402300799)")
        }
        return value
    }
}
