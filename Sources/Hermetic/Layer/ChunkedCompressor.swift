/// Compresses a byte stream on all cores with bytes that do not depend on the number of cores.
///
/// In: the tar bytes of a layer, in order, through `write`. Out: through `sink`, in order, the blob:
/// the input cut at every `LayerCompression.chunkSize` bytes, each chunk compressed alone as one gzip
/// member (libdeflate) or one zstd frame (libzstd, single-threaded, no checksum), the results
/// concatenated. Every gzip and zstd reader reads concatenated members and frames as one stream. An empty
/// input gives one member or frame of nothing. While one batch of chunks is compressed on worker
/// threads the caller fills the next, so producing the tar overlaps compressing it.
internal import CDeflate
internal import CZstd
import Dispatch

extension LayerCompression {
    /// The versions of the libraries this builder links: with the level and the chunk size, they fix the
    /// compressed bytes.
    public static let deflateVersion = LIBDEFLATE_VERSION_STRING
    public static var zstdVersion: String { String(cString: ZSTD_versionString()) }
}

final class ChunkedCompressor {
    private let compression: LayerCompression
    private let sink: (UnsafeRawBufferPointer) throws -> Void
    private var filling: ChunkBatch
    private var spare: ChunkBatch
    /// The batch being compressed on worker threads, if any, and the group to wait on.
    private var inFlight: (batch: ChunkBatch, group: DispatchGroup)?
    private var wroteAnything = false

    /// `workers` sizes the batches (two chunks per worker); it never changes the bytes.
    init(
        _ compression: LayerCompression, workers: Int, sink: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        precondition(compression != .uncompressed, "ChunkedCompressor compresses")
        self.compression = compression
        self.sink = sink
        let chunks = max(2, 2 * workers)
        filling = try ChunkBatch(compression, chunks: chunks)
        spare = try ChunkBatch(compression, chunks: chunks)
    }

    func write(_ buffer: UnsafeRawBufferPointer) throws {
        guard var base = buffer.baseAddress else { return }
        var remaining = buffer.count
        while remaining > 0 {
            let taken = filling.append(base, count: remaining)
            base += taken
            remaining -= taken
            wroteAnything = true
            if filling.isFull { try dispatchFilling() }
        }
    }

    /// Compresses what is left and hands every remaining byte to the sink.
    func finish() throws {
        if filling.usedChunks > 0 || !wroteAnything {
            try dispatchFilling(allowEmpty: true)
        }
        try drainInFlight()
    }

    /// Starts compressing the full (or final) batch, after emitting the one before it.
    private func dispatchFilling(allowEmpty: Bool = false) throws {
        try drainInFlight()
        let batch = filling
        let chunkCount = max(batch.usedChunks, allowEmpty ? 1 : 0)
        let group = DispatchGroup()
        for index in 0..<chunkCount {
            DispatchQueue.global().async(group: group) { batch.compress(chunk: index) }
        }
        inFlight = (batch, group)
        filling = spare
        filling.reset()
        spare = batch
    }

    private func drainInFlight() throws {
        guard let (batch, group) = inFlight else { return }
        inFlight = nil
        group.wait()
        try batch.emit(sink)
    }
}

/// A fixed set of chunk buffers with their compressed outputs and one encoder per chunk, so chunks of
/// one batch compress on different threads without sharing anything.
private final class ChunkBatch: @unchecked Sendable {
    // @unchecked: during `compress`, chunk i's input, output, size and encoder are touched only by
    // the task for chunk i; everything else happens on the owning thread after the group's wait.
    private let chunkSize = LayerCompression.chunkSize
    private let input: UnsafeMutableRawBufferPointer
    private let output: UnsafeMutableRawBufferPointer
    private let outputStride: Int
    // Raw buffers, not arrays: chunk tasks write their own elements at once, and an array's element
    // write is an access to the whole array.
    private let outputSizes: UnsafeMutableBufferPointer<Int>
    private let failures: UnsafeMutableBufferPointer<CompressionFailure?>
    private let encoders: [ChunkEncoder]
    private var filled = 0

    init(_ compression: LayerCompression, chunks: Int) throws {
        encoders = try (0..<chunks).map { _ in try ChunkEncoder(compression) }
        outputStride = encoders[0].bound(chunkSize)
        input = .allocate(byteCount: chunks * chunkSize, alignment: 64)
        output = .allocate(byteCount: chunks * outputStride, alignment: 64)
        outputSizes = .allocate(capacity: chunks)
        outputSizes.initialize(repeating: 0)
        failures = .allocate(capacity: chunks)
        failures.initialize(repeating: nil)
    }

    deinit {
        input.deallocate()
        output.deallocate()
        outputSizes.deallocate()
        _ = failures.deinitialize()
        failures.deallocate()
    }

    var isFull: Bool { filled == input.count }
    var usedChunks: Int { (filled + chunkSize - 1) / chunkSize }

    func reset() { filled = 0 }

    /// Copies up to `count` bytes into the batch; returns how many it took.
    func append(_ source: UnsafeRawPointer, count: Int) -> Int {
        let taken = min(count, input.count - filled)
        guard let base = input.baseAddress else { return 0 }
        (base + filled).copyMemory(from: source, byteCount: taken)
        filled += taken
        return taken
    }

    func compress(chunk index: Int) {
        let start = index * chunkSize
        let size = max(0, min(chunkSize, filled - start))
        guard let inBase = input.baseAddress, let outBase = output.baseAddress else { return }
        do {
            outputSizes[index] = try encoders[index].encode(
                UnsafeRawBufferPointer(start: inBase + start, count: size),
                into: UnsafeMutableRawBufferPointer(start: outBase + index * outputStride, count: outputStride))
            failures[index] = nil
        } catch let failure as CompressionFailure {
            failures[index] = failure
        } catch {
            failures[index] = CompressionFailure(description: "\(error)")
        }
    }

    func emit(_ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let chunks = max(usedChunks, 1)
        guard let outBase = output.baseAddress else { return }
        for index in 0..<chunks {
            if let failure = failures[index] { throw failure }
            try sink(UnsafeRawBufferPointer(start: outBase + index * outputStride, count: outputSizes[index]))
        }
    }
}

struct CompressionFailure: Error, CustomStringConvertible {
    var description: String
}

/// One libdeflate compressor or one zstd context, used by one thread at a time.
private final class ChunkEncoder {
    private enum Handle {
        case gzip(OpaquePointer)
        case zstd(OpaquePointer)
    }
    private let handle: Handle

    init(_ compression: LayerCompression) throws {
        switch compression {
        case .gzip(let level):
            guard let compressor = libdeflate_alloc_compressor(Int32(level)) else {
                throw CompressionFailure(description: "libdeflate_alloc_compressor(\(level)) failed")
            }
            handle = .gzip(compressor)
        case .zstd(let level):
            guard let context = ZSTD_createCCtx() else {
                throw CompressionFailure(description: "ZSTD_createCCtx failed")
            }
            handle = .zstd(context)
            // Everything that shapes a frame is pinned here rather than left to the library's defaults.
            try Self.check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Int32(level)), "level")
            try Self.check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 0), "checksumFlag")
            try Self.check(ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1), "contentSizeFlag")
            try Self.check(ZSTD_CCtx_setParameter(context, ZSTD_c_dictIDFlag, 0), "dictIDFlag")
            try Self.check(ZSTD_CCtx_setParameter(context, ZSTD_c_nbWorkers, 0), "nbWorkers")
        case .uncompressed:
            throw CompressionFailure(description: "no encoder for an uncompressed layer")
        }
    }

    deinit {
        switch handle {
        case .gzip(let compressor): libdeflate_free_compressor(compressor)
        case .zstd(let context): ZSTD_freeCCtx(context)
        }
    }

    func bound(_ size: Int) -> Int {
        switch handle {
        case .gzip(let compressor): return libdeflate_gzip_compress_bound(compressor, size)
        case .zstd: return ZSTD_compressBound(size)
        }
    }

    func encode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        switch handle {
        case .gzip(let compressor):
            let written = libdeflate_gzip_compress(
                compressor, input.baseAddress, input.count, output.baseAddress, output.count)
            guard written > 0 else { throw CompressionFailure(description: "libdeflate_gzip_compress failed") }
            return written
        case .zstd(let context):
            let written = ZSTD_compress2(context, output.baseAddress, output.count, input.baseAddress, input.count)
            try Self.check(written, "ZSTD_compress2")
            return written
        }
    }

    private static func check(_ code: Int, _ what: String) throws {
        if ZSTD_isError(code) != 0 {
            let name = ZSTD_getErrorName(code).map { String(cString: $0) } ?? "error \(code)"
            throw CompressionFailure(description: "zstd \(what): \(name)")
        }
    }
}
