/// The compression keys of one `-o` (BuildKit's image-exporter attributes `compression`,
/// `compression-level` and `force-compression`), as given; nil when not given.
public struct OutputCompressionKeys: Sendable, Hashable {
    public static let names = ["compression", "compression-level", "force-compression"]

    public var compression: String?
    public var level: String?
    public var force: String?

    public init(compression: String? = nil, level: String? = nil, force: String? = nil) {
        self.compression = compression
        self.level = level
        self.force = force
    }

    public var isEmpty: Bool { compression == nil && level == nil && force == nil }
}

/// How the build compresses its layers, from `--compression`, `--compression-level` and the keys of each
/// output that carries layers (SPEC §3, Compression). A key and a flag may both say a thing only when they
/// say the same; every such output must come to the same choice (one build writes one image).
public struct CompressionRequest: Sendable, Hashable, CustomStringConvertible {
    public var compression: LayerCompression
    /// `force-compression=true`: base-image layers are compressed as the build's own are.
    public var force: Bool

    public init(compression: LayerCompression, force: Bool = false) {
        self.compression = compression
        self.force = force
    }

    public var description: String { force ? "\(compression), force-compression" : compression.description }

    /// A parsed `-o` as `resolve` takes it: the text (for errors), what it writes, its keys.
    public typealias Output = (text: String, spec: OutputSpec, keys: OutputCompressionKeys)

    public static func resolve(
        compression flag: String?, level levelFlag: Int?, outputs: [Output]
    ) throws(ArgumentError) -> CompressionRequest {
        if let flag {
            do {
                _ = try LayerCompression(name: flag, level: nil)
            } catch {
                if case .unknown = error {
                    throw ArgumentError(argument: "--compression", value: flag, reason: error.description)
                }
            }
        }
        var chosen: [(text: String, request: CompressionRequest)] = []
        for output in outputs where output.spec.carriesLayers {
            chosen.append(
                (output.text, try resolve(output: output.text, keys: output.keys, flag: flag, levelFlag: levelFlag)))
        }
        guard let first = chosen.first else { return try fromFlags(flag, levelFlag) }
        for other in chosen.dropFirst() where other.request != first.request {
            throw ArgumentError(
                argument: "--output", value: other.text,
                reason:
                    "its compression (\(other.request)) differs from that of --output \"\(first.text)\" "
                    + "(\(first.request)): a build writes one compression, so give every output the same "
                    + "compression keys (or use --compression)")
        }
        return first.request
    }

    /// The flags alone (no output carries layers, or the outputs give no keys), with the flags' errors.
    static func fromFlags(_ flag: String?, _ levelFlag: Int?) throws(ArgumentError) -> CompressionRequest {
        do {
            return CompressionRequest(compression: try LayerCompression(name: flag ?? "gzip", level: levelFlag))
        } catch {
            if case .unknown(let name) = error {
                throw ArgumentError(argument: "--compression", value: name, reason: error.description)
            }
            throw ArgumentError(
                argument: "--compression-level", value: levelFlag.map(String.init) ?? "", reason: error.description)
        }
    }

    /// One output's choice: its keys, else the flags, else the defaults. Errors name the key.
    static func resolve(
        output text: String, keys: OutputCompressionKeys, flag: String?, levelFlag: Int?
    ) throws(ArgumentError) -> CompressionRequest {
        guard !keys.isEmpty else { return try fromFlags(flag, levelFlag) }
        func fail(_ reason: String) -> ArgumentError {
            ArgumentError(argument: "--output", value: text, reason: reason)
        }
        var name = flag ?? "gzip"
        if let given = keys.compression {
            switch given {
            case "gzip", "zstd", "uncompressed": break
            case "estargz":
                throw fail("compression=estargz is not supported (hermetic writes gzip, zstd or uncompressed layers)")
            default:
                throw fail("compression=\(given): unsupported compression type (expected gzip, zstd or uncompressed)")
            }
            if let flag, flag != given {
                throw fail("compression=\(given) conflicts with --compression \(flag): give it in one place")
            }
            name = given
        }
        var level = levelFlag
        if let given = keys.level {
            // Go's strconv.ParseInt, as BuildKit reads it: an optional sign and decimal digits.
            guard let parsed = Int(given) else { throw fail("compression-level=\(given): not an integer") }
            if let levelFlag, levelFlag != parsed {
                throw fail(
                    "compression-level=\(given) conflicts with --compression-level \(levelFlag): give it in one place")
            }
            level = parsed
        }
        var force = false
        if let given = keys.force {
            guard let parsed = goBool(given) else {
                throw fail("force-compression=\(given): not a boolean (true or false)")
            }
            force = parsed
        }
        do {
            return CompressionRequest(compression: try LayerCompression(name: name, level: level), force: force)
        } catch {
            if let given = keys.level { throw fail("compression-level=\(given): \(error)") }
            throw ArgumentError(
                argument: "--compression-level", value: levelFlag.map(String.init) ?? "",
                reason: "\(error) (compression=\(name) of --output \"\(text)\")")
        }
    }

    /// Go's strconv.ParseBool spellings; an empty value is true (BuildKit's `force-compression=`).
    static func goBool(_ text: String) -> Bool? {
        switch text {
        case "", "1", "t", "T", "TRUE", "true", "True": return true
        case "0", "f", "F", "FALSE", "false", "False": return false
        default: return nil
        }
    }
}
