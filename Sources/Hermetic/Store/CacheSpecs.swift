// Store/ — the `--cache-to` and `--cache-from` flags, in buildx's CSV form (SPEC §10, "Cache export and
// import").

/// Where a cache is written to or read from.
public enum CacheLocation: Sendable, Hashable {
    /// `type=local`: an OCI image layout directory.
    case directory(String)
    /// `type=registry`: a manifest in a registry repository, under a tag (or, to import, a digest).
    case registry(RegistryReference)
}

/// `--cache-to type=local,dest=DIR[,mode=min|max]` or `type=registry,ref=REF[,mode=…,ignore-error=…]` (or
/// buildx's bare `REF`): where a build writes the cached steps it used.
public struct CacheExportSpec: Sendable, Hashable {
    /// buildx's modes: `min` (the default) exports the steps of the final image's stages (the target stage
    /// and the stages it is built `FROM`), `max` the steps of every stage the build ran.
    public enum Mode: String, Sendable {
        case min, max
    }
    public var location: CacheLocation
    public var mode: Mode
    /// `ignore-error=true` (BuildKit's): an export that fails is a warning, not the build's failure.
    public var ignoreError = false
    /// How messages name the cache: `type=local,dest=DIR` or `type=registry,ref=REF`, as given.
    public var name: String

    public init(location: CacheLocation, mode: Mode = .min, name: String) {
        self.location = location
        self.mode = mode
        self.name = name
    }

    /// The directory of a `type=local` cache.
    public var destination: String? {
        if case .directory(let path) = location { path } else { nil }
    }

    /// One flag value; buildx's bare form `REF[,REF…]` gives one export per reference.
    public static func parse(_ text: String) throws(ArgumentError) -> [CacheExportSpec] {
        let argument = "--cache-to"
        func fail(_ reason: String) -> ArgumentError { ArgumentError(argument: argument, value: text, reason: reason) }
        var specs: [CacheExportSpec] = []
        for entry in try CacheSpecFields.parse(
            text, argument: argument,
            keys: [
                "local": ["dest", "mode"],
                "registry": ["ref", "mode", "ignore-error", "image-manifest", "oci-mediatypes"],
            ],
            refused: CacheSpecFields.refusedRegistryKeys.merging(
                ["compression", "compression-level", "force-compression"].map {
                    ($0, "the cache holds the store's uncompressed layer tars under their diff_id (SPEC §10)")
                }, uniquingKeysWith: { first, _ in first }))
        {
            let fields = entry.fields
            guard let mode = Mode(rawValue: fields["mode"] ?? "min") else {
                throw fail("mode must be min or max, not \"\(fields["mode"] ?? "")\"")
            }
            if entry.type == "local" {
                guard let dest = fields["dest"], !dest.isEmpty else { throw fail("dest= is required") }
                specs.append(CacheExportSpec(location: .directory(dest), mode: mode, name: "type=local,dest=\(dest)"))
                continue
            }
            let reference = try CacheSpecFields.reference(fields, in: text, argument: argument)
            guard reference.digest == nil else {
                throw fail("a cache is pushed under a tag; ref= cannot name a digest")
            }
            for (key, what) in [
                ("image-manifest", "one OCI image manifest"), ("oci-mediatypes", "in OCI media types"),
            ] {
                guard let value = fields[key] else { continue }
                // Our format has only the form true names: true is accepted and changes nothing.
                guard try CacheSpecFields.bool(value, key: key, in: text, argument: argument) else {
                    throw fail("\(key)=false is not supported: hermetic's cache is always \(what)")
                }
            }
            var spec = CacheExportSpec(
                location: .registry(reference), mode: mode, name: "type=registry,ref=\(fields["ref"] ?? "")")
            if let value = fields["ignore-error"] {
                spec.ignoreError = try CacheSpecFields.bool(value, key: "ignore-error", in: text, argument: argument)
            }
            specs.append(spec)
        }
        return specs
    }
}

/// `--cache-from type=local,src=DIR` or `type=registry,ref=REF` (or buildx's bare `REF`): a cache another
/// build exported, read before the steps run.
public struct CacheImportSpec: Sendable, Hashable {
    public var location: CacheLocation
    /// How messages name the cache: `type=local,src=DIR` or `type=registry,ref=REF`, as given.
    public var name: String

    public init(location: CacheLocation, name: String) {
        self.location = location
        self.name = name
    }

    /// The directory of a `type=local` cache.
    public var source: String? {
        if case .directory(let path) = location { path } else { nil }
    }

    /// One flag value; buildx's bare form `REF[,REF…]` gives one import per reference.
    public static func parse(_ text: String) throws(ArgumentError) -> [CacheImportSpec] {
        let argument = "--cache-from"
        var specs: [CacheImportSpec] = []
        // The export keys buildx users write on both flags are accepted on the registry's and do nothing:
        // BuildKit's importer ignores them too.
        for entry in try CacheSpecFields.parse(
            text, argument: argument,
            keys: [
                "local": ["src"],
                "registry": ["ref", "mode", "ignore-error", "image-manifest", "oci-mediatypes"],
            ], refused: CacheSpecFields.refusedRegistryKeys)
        {
            if entry.type == "local" {
                guard let source = entry.fields["src"], !source.isEmpty else {
                    throw ArgumentError(argument: argument, value: text, reason: "src= is required")
                }
                specs.append(CacheImportSpec(location: .directory(source), name: "type=local,src=\(source)"))
                continue
            }
            let reference = try CacheSpecFields.reference(entry.fields, in: text, argument: argument)
            specs.append(
                CacheImportSpec(
                    location: .registry(reference), name: "type=registry,ref=\(entry.fields["ref"] ?? "")"))
        }
        return specs
    }
}

/// buildx's `key=value,…` fields of a cache flag: `type=` first (`local` or `registry`), then only the keys
/// that type takes; a key given twice or unknown is refused in one line that names it. A value in which no
/// field has a `=` is buildx's bare form: each field is a `type=registry,ref=FIELD`.
enum CacheSpecFields {
    /// BuildKit's keys of `type=registry` that hermetic does not take, and why.
    static let refusedRegistryKeys = [
        "registry.insecure": "use --insecure-registry HOST[:PORT] for plain HTTP (loopback registries need neither)"
    ]

    /// `keys`: the keys each type takes; `refused`: keys of `type=registry` known and refused with a reason.
    static func parse(_ text: String, argument: String, keys: [String: [String]], refused: [String: String])
        throws(ArgumentError) -> [(type: String, fields: [String: String])]
    {
        func fail(_ reason: String) -> ArgumentError { ArgumentError(argument: argument, value: text, reason: reason) }
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        guard parts.contains(where: { $0.contains("=") }) else {
            return parts.map { (type: "registry", fields: ["ref": String($0)]) }
        }
        var fields: [String: String] = [:]
        for part in parts {
            guard let eq = part.firstIndex(of: "=") else { throw fail("\"\(part)\" is not key=value") }
            let key = String(part[..<eq]).lowercased()
            guard fields[key] == nil else { throw fail("\"\(key)\" is given twice") }
            fields[key] = String(part[part.index(after: eq)...])
        }
        let types = keys.keys.sorted().joined(separator: ", ")
        guard let type = fields["type"] else { throw fail("type= is required (\(types))") }
        guard let allowed = keys[type] else { throw fail("unknown type \"\(type)\" (supported: \(types))") }
        if type == "registry", let key = fields.keys.sorted().first(where: { refused[$0] != nil }) {
            throw fail("\(key)= is not supported: \(refused[key] ?? "")")
        }
        let unknown = fields.keys.filter { $0 != "type" && !allowed.contains($0) }.sorted()
        if !unknown.isEmpty {
            let listed = unknown.map { "\"\($0)\"" }.joined(separator: ", ")
            throw fail(
                "unknown \(unknown.count == 1 ? "key" : "keys") \(listed) for type=\(type) (its keys: "
                    + allowed.joined(separator: ", ") + ")")
        }
        return [(type, fields)]
    }

    /// `ref=`, normalized as docker normalizes names; without tag or digest it is `:latest`, as BuildKit's.
    static func reference(_ fields: [String: String], in value: String, argument: String) throws(ArgumentError)
        -> RegistryReference
    {
        guard let text = fields["ref"], !text.isEmpty else {
            throw ArgumentError(argument: argument, value: value, reason: "ref= is required")
        }
        var reference: RegistryReference
        do throws(RegistryReference.ParseError) {
            reference = try RegistryReference(parsing: text)
        } catch {
            throw ArgumentError(argument: argument, value: value, reason: error.description)
        }
        if reference.tag == nil && reference.digest == nil { reference.tag = "latest" }
        return reference
    }

    /// Go's `strconv.ParseBool`, which BuildKit reads these keys with.
    static func bool(_ text: String, key: String, in value: String, argument: String) throws(ArgumentError) -> Bool {
        switch text {
        case "1", "t", "T", "true", "TRUE", "True": return true
        case "0", "f", "F", "false", "FALSE", "False": return false
        default:
            throw ArgumentError(
                argument: argument, value: value, reason: "\(key) must be true or false, not \"\(text)\"")
        }
    }
}
