internal import CArchive

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Errors from writing, applying or extracting layers and archives.
public enum LayerError: HermeticError, Equatable {
    /// An entry handed to the writer breaks the layer-format rules.
    case invalidEntry(path: String, reason: String)
    /// A `.file` source no longer has the size recorded when the entry was planned.
    case sourceSizeChanged(path: String, source: String, expected: Int64, actual: Int64)
    /// libarchive reported an error.
    case archive(subject: String, operation: String, message: String)
    /// A layer or archive entry that is refused for safety (escapes, writes through symlinks…).
    /// `path` is already `displayable(bytes:)` (the raw name need not be UTF-8), so it is printed as is.
    case hostileEntry(layer: String, path: String, reason: String)
    /// The decompressed layer does not hash to the digest the manifest/config promised.
    case diffIDMismatch(layer: String, expected: Digest, actual: Digest)
    /// A bound against hostile input was hit.
    case limitExceeded(layer: String, limit: String)
    case unsupportedMediaType(layer: String, mediaType: String)
    /// A system call failed while applying the layer (`reason` names the call and the path).
    case failed(layer: String, reason: String)

    public var description: String {
        switch self {
        case .invalidEntry(let path, let reason):
            return "layer entry \"\(displayable(path))\": \(reason)"
        case .sourceSizeChanged(let path, let source, let expected, let actual):
            return
                "layer entry \"\(displayable(path))\": source file \(displayable(source)) changed size (expected \(expected) bytes, found \(actual))"
        case .archive(let subject, let operation, let message):
            return "\(displayable(subject)): \(operation): \(message)"
        case .hostileEntry(let layer, let path, let reason):
            return "layer \(displayable(layer)): entry \"\(path)\" refused: \(reason)"
        case .diffIDMismatch(let layer, let expected, let actual):
            return "layer \(displayable(layer)): diff_id mismatch: expected \(expected), got \(actual)"
        case .limitExceeded(let layer, let limit):
            return "layer \(displayable(layer)): limit exceeded: \(limit)"
        case .unsupportedMediaType(let layer, let mediaType):
            return "layer \(displayable(layer)): unsupported media type \"\(displayable(mediaType))\""
        case .failed(let layer, let reason):
            return "layer \(displayable(layer)): \(reason)"
        }
    }
}

/// Bounds applied when reading layers and archives that may be hostile.
public struct LayerLimits: Sendable, Hashable {
    /// Maximum number of entries (headers) in one layer or archive.
    public var maxEntries: Int
    /// Maximum length in bytes of an entry path or link target, as stored.
    public var maxPathBytes: Int
    /// Maximum bytes of the decompressed stream, and separately the maximum sum of entry sizes.
    public var maxTotalBytes: Int64
    /// Maximum distinct paths one applied layer names: its entries, the directories its whiteouts are
    /// in, and every directory above them. The applier remembers each (to keep whiteouts and opaque
    /// directories off them), so this bounds its memory: deep entries in fresh directories add one path
    /// per level, and gzip stores thousands of such levels in a few bytes.
    public var maxPaths: Int

    public init(
        maxEntries: Int = 1_000_000, maxPathBytes: Int = 4096, maxTotalBytes: Int64 = 64 << 30,
        maxPaths: Int = 2_000_000
    ) {
        self.maxEntries = maxEntries
        self.maxPathBytes = maxPathBytes
        self.maxTotalBytes = maxTotalBytes
        self.maxPaths = maxPaths
    }

    /// 1,000,000 entries, 4096-byte paths, 64 GiB decompressed and 64 GiB of file contents, 2,000,000
    /// distinct paths per applied layer (twice the entries: room for parents a layer does not list).
    public static let standard = LayerLimits()
}

/// A name as it is printed in errors and warnings: one line, unambiguous, bounded. A backslash is
/// doubled, so every other backslash starts an escape: `\n`, `\r`, `\t`; `\xHH` (two hex digits) for
/// any other control byte or DEL and for each byte that is not valid UTF-8; `\u{HHHH}` for C1 controls,
/// line/paragraph separators and bidirectional overrides (they could reorder or split the line on a
/// terminal). After 300 characters the rest is `…`.
func displayable(_ text: String) -> String {
    var display = DisplayText()
    for scalar in text.unicodeScalars {
        guard display.append(scalar) else { break }
    }
    return display.text
}

/// `displayable` for raw bytes (names read from archives and directories need not be UTF-8).
func displayable(bytes: [UInt8]) -> String {
    var display = DisplayText()
    var parser = Unicode.UTF8.ForwardParser()
    var iterator = bytes.makeIterator()
    // The parser's results cover the input in order, so `offset` tracks where each one starts.
    var offset = 0
    while true {
        switch parser.parseScalar(from: &iterator) {
        case .valid(let encoded):
            offset += encoded.count
            guard display.append(Unicode.UTF8.decode(encoded)) else { return display.text }
        case .error(let length):
            for byte in bytes[offset..<offset + length] {
                guard display.appendEscaped(byte) else { return display.text }
            }
            offset += length
        case .emptyInput:
            return display.text
        }
    }
}

/// The output of `displayable`, built one character at a time.
private struct DisplayText {
    var text = ""
    private var count = 0
    private var truncated = false
    static let limit = 300

    /// Appends a scalar, escaped if need be; false once the limit is reached (`…` is then written).
    mutating func append(_ scalar: Unicode.Scalar) -> Bool {
        guard begin() else { return false }
        switch scalar.value {
        case 0x5c: text += "\\\\"
        case 0x0a: text += "\\n"
        case 0x0d: text += "\\r"
        case 0x09: text += "\\t"
        case 0..<0x20, 0x7f: text += Self.hexByte(UInt8(scalar.value))
        case 0x80..<0xa0, 0x2028, 0x2029, 0x202a...0x202e, 0x2066...0x2069:
            text += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
        default: text.unicodeScalars.append(scalar)
        }
        return true
    }

    /// Appends a byte that is not part of valid UTF-8 as `\xHH`.
    mutating func appendEscaped(_ byte: UInt8) -> Bool {
        guard begin() else { return false }
        text += Self.hexByte(byte)
        return true
    }

    private mutating func begin() -> Bool {
        guard count < Self.limit else {
            if !truncated { text += "…" }
            truncated = true
            return false
        }
        count += 1
        return true
    }

    static func hexByte(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return "\\x" + String(digits[Int(byte >> 4)]) + String(digits[Int(byte & 0xf)])
    }
}

// MARK: - Thread locale

/// Switches the calling thread to the C.UTF-8 locale while alive, so libarchive converts
/// names between UTF-8 (PAX records) and its "native" multibyte form without loss, without
/// touching the process-wide locale. Callers are synchronous, so the thread does not change.
final class UTF8ThreadLocale {
    private let locale: locale_t?
    private let previous: locale_t?

    init() {
        let created = newlocale(Int32(1) << LC_CTYPE, "C.UTF-8", nil)
        locale = created
        previous = created.flatMap { uselocale($0) }
    }

    deinit {
        if let previous { uselocale(previous) }
        if let locale { freelocale(locale) }
    }
}

// MARK: - libarchive handles

/// The `AE_IF*` / `S_IF*` file-type bits (their C macros are not imported into Swift).
enum FileTypeBits {
    static let mask: UInt32 = 0o170000
    static let regular: UInt32 = 0o100000
    static let directory: UInt32 = 0o040000
    static let symlink: UInt32 = 0o120000
    static let characterDevice: UInt32 = 0o020000
    static let blockDevice: UInt32 = 0o060000
    static let fifo: UInt32 = 0o010000
    static let socket: UInt32 = 0o140000
}

/// Owns a `struct archive *` for writing.
final class ArchiveWriter {
    let handle: OpaquePointer
    let subject: String
    private var sink: WriteSink?

    init(subject: String) throws(LayerError) {
        guard let archive = archive_write_new() else {
            throw .archive(subject: subject, operation: "archive_write_new", message: "out of memory")
        }
        handle = archive
        self.subject = subject
    }

    deinit { archive_write_free(handle) }

    func check(_ status: Int32, _ operation: String) throws {
        if status == ARCHIVE_OK { return }
        if let failure = sink?.failure { throw failure }
        if status == ARCHIVE_WARN { return }
        throw LayerError.archive(subject: subject, operation: operation, message: errorString)
    }

    var errorString: String {
        archive_error_string(handle).map { String(cString: $0) } ?? "unknown libarchive error"
    }

    /// Opens the archive so every output byte goes to `consume`, synchronously and in order.
    func open(consume: @escaping (UnsafeRawBufferPointer) throws -> Void) throws {
        let sink = WriteSink(consume: consume)
        self.sink = sink
        let status = archive_write_open(
            handle, Unmanaged.passUnretained(sink).toOpaque(), nil,
            { _, clientData, buffer, length in
                guard let clientData else { return -1 }
                let sink = Unmanaged<WriteSink>.fromOpaque(clientData).takeUnretainedValue()
                do {
                    try sink.consume(UnsafeRawBufferPointer(start: buffer, count: length))
                    return length
                } catch {
                    sink.failure = error
                    return -1
                }
            }, nil)
        try check(status, "archive_write_open")
    }

    /// Writes all of `buffer` as entry data.
    func writeData(_ buffer: UnsafeRawBufferPointer) throws {
        guard var base = buffer.baseAddress else { return }
        var remaining = buffer.count
        while remaining > 0 {
            let written = archive_write_data(handle, base, remaining)
            if written <= 0 {
                if let failure = sink?.failure { throw failure }
                throw LayerError.archive(subject: subject, operation: "archive_write_data", message: errorString)
            }
            remaining -= written
            base += written
        }
    }

    /// The error a write callback raised, if any (it is more precise than libarchive's).
    var callbackFailure: (any Error)? { sink?.failure }
}

private final class WriteSink {
    let consume: (UnsafeRawBufferPointer) throws -> Void
    var failure: (any Error)?
    init(consume: @escaping (UnsafeRawBufferPointer) throws -> Void) { self.consume = consume }
}

/// Owns a `struct archive *` for reading.
final class ArchiveReader {
    let handle: OpaquePointer
    let subject: String
    private var source: ReadSource?

    init(subject: String) throws(LayerError) {
        guard let archive = archive_read_new() else {
            throw .archive(subject: subject, operation: "archive_read_new", message: "out of memory")
        }
        handle = archive
        self.subject = subject
    }

    deinit { archive_read_free(handle) }

    var errorString: String {
        archive_error_string(handle).map { String(cString: $0) } ?? "unknown libarchive error"
    }

    func failure(_ operation: String) -> any Error {
        if let failure = source?.failure { return failure }
        return LayerError.archive(subject: subject, operation: operation, message: errorString)
    }

    /// Reads the archive from bytes produced by `produce`, which fills the buffer and returns
    /// how many bytes it wrote (0 at the end).
    func open(produce: @escaping (UnsafeMutableRawBufferPointer) throws -> Int) throws {
        let source = ReadSource(produce: produce)
        self.source = source
        let status = archive_read_open(
            handle, Unmanaged.passUnretained(source).toOpaque(), nil,
            { _, clientData, bufferOut in
                guard let clientData, let bufferOut else { return -1 }
                let source = Unmanaged<ReadSource>.fromOpaque(clientData).takeUnretainedValue()
                do {
                    let count = try source.produce(source.buffer)
                    bufferOut.pointee = UnsafeRawPointer(source.buffer.baseAddress)
                    return count
                } catch {
                    source.failure = error
                    return -1
                }
            }, nil)
        if status != ARCHIVE_OK { throw failure("archive_read_open") }
    }

    /// Reads from an open file descriptor the caller keeps open until the reader is freed.
    func open(fileDescriptor: Int32) throws {
        if archive_read_open_fd(handle, fileDescriptor, 1 << 20) != ARCHIVE_OK {
            throw failure("archive_read_open_fd")
        }
    }

    /// Next header, or nil at the end. Warnings (e.g. an unconvertible name) are tolerated:
    /// the raw name is still available and is validated by the caller.
    func nextHeader() throws -> OpaquePointer? {
        var entry: OpaquePointer?
        let status = archive_read_next_header(handle, &entry)
        switch status {
        case ARCHIVE_OK, ARCHIVE_WARN: return entry
        case ARCHIVE_EOF: return nil
        default: throw failure("archive_read_next_header")
        }
    }

    /// Reads decompressed entry data into `buffer`; 0 at the end of the entry.
    func readData(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let count = archive_read_data(handle, buffer.baseAddress, buffer.count)
        if count < 0 { throw failure("archive_read_data") }
        return count
    }
}

private final class ReadSource {
    let produce: (UnsafeMutableRawBufferPointer) throws -> Int
    let buffer: UnsafeMutableRawBufferPointer
    var failure: (any Error)?
    init(produce: @escaping (UnsafeMutableRawBufferPointer) throws -> Int) {
        self.produce = produce
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
    }
    deinit { buffer.deallocate() }
}

/// Owns one `struct archive_entry *` reused for every header written.
final class ArchiveEntryHandle {
    let handle: OpaquePointer
    init() throws(LayerError) {
        guard let entry = archive_entry_new() else {
            throw .archive(subject: "archive entry", operation: "archive_entry_new", message: "out of memory")
        }
        handle = entry
    }
    deinit { archive_entry_free(handle) }
}

/// The fields of a header read back from an archive, names as raw bytes.
struct ReadHeader {
    enum FileType: Equatable { case regular, directory, symlink, characterDevice, blockDevice, fifo, socket, unknown }
    var pathname: [UInt8]
    var hardlink: [UInt8]?
    var symlink: [UInt8]?
    var type: FileType
    var mode: UInt32
    var uid: Int64
    var gid: Int64
    var mtime: Int64
    var size: Int64
    var sizeIsSet: Bool
    var rdevMajor: UInt32
    var rdevMinor: UInt32
    var xattrs: [(name: String, value: [UInt8])]

    init(_ entry: OpaquePointer) {
        func bytes(_ pointer: UnsafePointer<CChar>?) -> [UInt8]? {
            guard let pointer else { return nil }
            return Array(UnsafeRawBufferPointer(start: pointer, count: strlen(pointer)))
        }
        pathname = bytes(archive_entry_pathname(entry)) ?? bytes(archive_entry_pathname_utf8(entry)) ?? []
        hardlink = bytes(archive_entry_hardlink(entry)) ?? bytes(archive_entry_hardlink_utf8(entry))
        symlink = bytes(archive_entry_symlink(entry)) ?? bytes(archive_entry_symlink_utf8(entry))
        switch UInt32(archive_entry_filetype(entry)) & FileTypeBits.mask {
        case FileTypeBits.regular: type = .regular
        case FileTypeBits.directory: type = .directory
        case FileTypeBits.symlink: type = .symlink
        case FileTypeBits.characterDevice: type = .characterDevice
        case FileTypeBits.blockDevice: type = .blockDevice
        case FileTypeBits.fifo: type = .fifo
        case FileTypeBits.socket: type = .socket
        default: type = .unknown
        }
        mode = UInt32(archive_entry_perm(entry)) & 0o7777
        uid = archive_entry_uid(entry)
        gid = archive_entry_gid(entry)
        mtime = archive_entry_mtime_is_set(entry) != 0 ? Int64(archive_entry_mtime(entry)) : 0
        size = archive_entry_size(entry)
        sizeIsSet = archive_entry_size_is_set(entry) != 0
        rdevMajor = UInt32(truncatingIfNeeded: archive_entry_rdevmajor(entry))
        rdevMinor = UInt32(truncatingIfNeeded: archive_entry_rdevminor(entry))
        xattrs = []
        if archive_entry_xattr_reset(entry) > 0 {
            var name: UnsafePointer<CChar>?
            var value: UnsafeRawPointer?
            var length = 0
            while archive_entry_xattr_next(entry, &name, &value, &length) == ARCHIVE_OK {
                guard let name else { continue }
                let data = value.map { Array(UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
                xattrs.append((String(cString: name), data))
            }
        }
    }
}

// MARK: - Path normalization for entries read from archives

/// Normalizes a path read from an archive: strips leading `/` and `./`, drops empty and `.`
/// components, resolves `..` lexically. Returns nil when a `..` would climb above the root.
/// The empty array means the root itself.
func normalizedArchivePath(_ raw: [UInt8]) -> [[UInt8]]? {
    var components: [[UInt8]] = []
    for part in raw.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
        if part.count == 1 && part.first == UInt8(ascii: ".") { continue }
        if part.count == 2 && part.allSatisfy({ $0 == UInt8(ascii: ".") }) {
            if components.popLast() == nil { return nil }
            continue
        }
        components.append(Array(part))
    }
    return components
}

func joinedPath(_ components: some Collection<[UInt8]>) -> [UInt8] {
    var out: [UInt8] = []
    for (index, component) in components.enumerated() {
        if index > 0 { out.append(UInt8(ascii: "/")) }
        out.append(contentsOf: component)
    }
    return out
}

/// Compares paths component by component as bytes, so `a/b` sorts before `a.b` and before `a/b/c`.
func componentwiseLess(_ lhs: [[UInt8]], _ rhs: [[UInt8]]) -> Bool {
    lhs.lexicographicallyPrecedes(rhs) { $0.lexicographicallyPrecedes($1) }
}
