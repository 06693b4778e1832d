// Store/ — the `--cache-to` and `--cache-from` flags, in buildx's CSV form (SPEC §10, "Cache export and
// import").

/// `--cache-to type=local,dest=DIR[,mode=min|max]`: where a build writes the cached steps it used.
public struct CacheExportSpec: Sendable, Hashable {
    /// buildx's modes: `min` (the default) exports the steps of the final image's stages (the target stage
    /// and the stages it is built `FROM`), `max` the steps of every stage the build ran.
    public enum Mode: String, Sendable {
        case min, max
    }
    public var destination: String
    public var mode: Mode

    public init(destination: String, mode: Mode = .min) {
        self.destination = destination
        self.mode = mode
    }

    public static func parse(_ text: String) throws(ArgumentError) -> CacheExportSpec {
        let fields = try CacheSpecFields.parse(text, argument: "--cache-to", keys: ["dest", "mode"], path: "dest")
        guard let dest = fields["dest"], !dest.isEmpty else {
            throw ArgumentError(argument: "--cache-to", value: text, reason: "dest= is required")
        }
        guard let mode = Mode(rawValue: fields["mode"] ?? "min") else {
            throw ArgumentError(
                argument: "--cache-to", value: text, reason: "mode must be min or max, not \"\(fields["mode"] ?? "")\"")
        }
        return CacheExportSpec(destination: dest, mode: mode)
    }
}

/// `--cache-from type=local,src=DIR`: a cache another build exported, read before the steps run.
public struct CacheImportSpec: Sendable, Hashable {
    public var source: String

    public init(source: String) { self.source = source }

    public static func parse(_ text: String) throws(ArgumentError) -> CacheImportSpec {
        let fields = try CacheSpecFields.parse(text, argument: "--cache-from", keys: ["src"], path: "src")
        guard let source = fields["src"], !source.isEmpty else {
            throw ArgumentError(argument: "--cache-from", value: text, reason: "src= is required")
        }
        return CacheImportSpec(source: source)
    }
}

/// buildx's `key=value,…` fields of a cache flag: `type=` first (only `local` so far), then only the keys
/// that type takes; a key given twice or unknown is refused in one line that names it.
enum CacheSpecFields {
    static func parse(_ text: String, argument: String, keys: [String], path: String) throws(ArgumentError)
        -> [String: String]
    {
        func fail(_ reason: String) -> ArgumentError { ArgumentError(argument: argument, value: text, reason: reason) }
        guard text.contains("=") else {
            // buildx reads a bare name as type=registry,ref=NAME.
            throw fail("expected type=local,\(path)=DIR (a bare registry reference is not supported)")
        }
        var fields: [String: String] = [:]
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let eq = part.firstIndex(of: "=") else { throw fail("\"\(part)\" is not key=value") }
            let key = String(part[..<eq]).lowercased()
            guard fields[key] == nil else { throw fail("\"\(key)\" is given twice") }
            fields[key] = String(part[part.index(after: eq)...])
        }
        guard let type = fields["type"] else { throw fail("type= is required (local)") }
        guard type == "local" else { throw fail("unknown type \"\(type)\" (supported: local)") }
        let unknown = fields.keys.filter { $0 != "type" && !keys.contains($0) }.sorted()
        if !unknown.isEmpty {
            let listed = unknown.map { "\"\($0)\"" }.joined(separator: ", ")
            throw fail(
                "unknown \(unknown.count == 1 ? "key" : "keys") \(listed) for type=local (its keys: "
                    + keys.joined(separator: ", ") + ")")
        }
        return fields
    }
}
