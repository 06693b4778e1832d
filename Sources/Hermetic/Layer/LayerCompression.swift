/// How a layer's tar becomes its blob: the `--compression` / `compression=` choice, and the exact bytes
/// each choice gives (SPEC §3, "Compression").
public enum LayerCompression: Sendable, Hashable, CustomStringConvertible {
    case uncompressed
    /// gzip members of fixed-size chunks, each compressed by libdeflate at `level` (0–9).
    case gzip(level: Int)
    /// zstd frames of fixed-size chunks, each compressed by libzstd at `level` (1–19).
    case zstd(level: Int)

    public static let `default` = LayerCompression.gzip(level: defaultGzipLevel)
    public static let defaultGzipLevel = 6
    public static let defaultZstdLevel = 3
    public static let gzipLevels = 0...9
    public static let zstdLevels = 1...19

    /// The tar is cut into chunks of this many bytes (the last may be shorter); each chunk is compressed
    /// alone, so the blob is the same whatever the number of threads.
    public static let chunkSize = 1 << 20

    public var mediaType: String {
        switch self {
        case .uncompressed: return MediaType.layerTar
        case .gzip: return MediaType.layerGzip
        case .zstd: return MediaType.layerZstd
        }
    }

    public var description: String {
        switch self {
        case .uncompressed: return "uncompressed"
        case .gzip(let level): return "gzip level \(level)"
        case .zstd(let level): return "zstd level \(level)"
        }
    }

    /// The compression a buildx user names: `name` is `gzip`, `zstd` or `uncompressed`, `level` the
    /// optional `compression-level`. Errors say what is accepted.
    public init(name: String, level: Int?) throws(CompressionChoiceError) {
        switch name {
        case "gzip":
            let chosen = level ?? Self.defaultGzipLevel
            guard Self.gzipLevels.contains(chosen) else { throw .level(name, chosen, Self.gzipLevels) }
            self = .gzip(level: chosen)
        case "zstd":
            let chosen = level ?? Self.defaultZstdLevel
            guard Self.zstdLevels.contains(chosen) else { throw .level(name, chosen, Self.zstdLevels) }
            self = .zstd(level: chosen)
        case "uncompressed":
            guard level == nil else { throw .levelWithoutCompression }
            self = .uncompressed
        default:
            throw .unknown(name)
        }
    }
}

public enum CompressionChoiceError: Error, Equatable, CustomStringConvertible {
    case unknown(String)
    case level(String, Int, ClosedRange<Int>)
    case levelWithoutCompression

    public var description: String {
        switch self {
        case .unknown(let name):
            return "unknown compression \"\(name)\" (expected gzip, zstd or uncompressed)"
        case .level(let name, let level, let range):
            return "compression level \(level) is out of range for \(name) (\(range.lowerBound)-\(range.upperBound))"
        case .levelWithoutCompression:
            return "a compression level needs gzip or zstd, not uncompressed"
        }
    }
}
