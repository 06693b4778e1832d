/// Compresses a byte stream on all cores with bytes that do not depend on the number of cores.
///
/// In: the tar bytes of a layer, in order, through `write` (copied) or `fill` (read straight into the
/// chunk buffer). Out: through `sink`, in order, the blob: the input cut at every
/// `LayerCompression.chunkSize` bytes, each chunk compressed alone as one gzip member (libdeflate) or one
/// zstd frame (libzstd, single-threaded, no checksum), the results concatenated. Every gzip and zstd reader
/// reads concatenated members and frames as one stream. An empty input gives one member or frame of
/// nothing. `observeInput` sees the input, in order, in whole chunks (for the diff_id).
///
/// The work is a pipeline over a ring of chunk slots, run by `workers` threads that take whichever job is
/// ready: hand the oldest compressed chunk to `sink` (one at a time, in order), hand the oldest unseen
/// chunk to `observeInput` (one at a time, in order), or compress any filled chunk. So while the caller
/// produces the tar, the chunks before it are hashed, compressed, hashed again and written, on every core,
/// without a barrier between batches. A slot is filled again only once it is written and observed.
internal import CDeflate
internal import CZstd
import Foundation

extension LayerCompression {
    /// The versions of the libraries this builder links: with the level and the chunk size, they fix the
    /// compressed bytes.
    public static let deflateVersion = LIBDEFLATE_VERSION_STRING
    public static var zstdVersion: String { String(cString: ZSTD_versionString()) }
}

final class ChunkedCompressor {
    private let pipeline: ChunkPipeline
    /// The chunk the caller is filling: its slot, once free, and how many bytes it holds.
    private var current: ChunkSlot?
    private var currentCount = 0
    private var finished = false

    /// `workers` threads run the pipeline; the number never changes the bytes. `observeInput` and `sink`
    /// are called on those threads, never two calls of one of them at once, and each in order.
    init(
        _ compression: LayerCompression, workers: Int,
        observeInput: ((UnsafeRawBufferPointer) throws -> Void)? = nil,
        sink: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        precondition(compression != .uncompressed, "ChunkedCompressor compresses")
        let threads = max(1, workers)
        let encoders = try (0..<threads).map { _ in try ChunkEncoder(compression) }
        let outputBound = encoders[0].bound(LayerCompression.chunkSize)
        // Two slots per worker keep every worker busy while the caller fills one and `sink` drains one.
        let slots = (0..<(2 * threads + 2)).map { _ in ChunkSlot(outputBound: outputBound) }
        pipeline = ChunkPipeline(slots: slots, observeInput: observeInput, sink: sink)
        for encoder in encoders { pipeline.startWorker(encoder) }
    }

    deinit { pipeline.stop() }

    /// Copies `buffer` into the chunks.
    func write(_ buffer: UnsafeRawBufferPointer) throws {
        guard var base = buffer.baseAddress else { return }
        var remaining = buffer.count
        while remaining > 0 {
            let slot = try currentSlot()
            let taken = min(remaining, slot.input.count - currentCount)
            (slot.inputBase + currentCount).copyMemory(from: base, byteCount: taken)
            try commit(taken)
            base += taken
            remaining -= taken
        }
    }

    /// Lets `read` put bytes straight into the free part of the current chunk; it returns how many it put
    /// there (at most the buffer's size), 0 at the end of the input. Returns false at the end.
    func fill(_ read: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Bool {
        let slot = try currentSlot()
        let free = UnsafeMutableRawBufferPointer(
            start: slot.inputBase + currentCount, count: slot.input.count - currentCount)
        let count = try read(free)
        precondition(count >= 0 && count <= free.count, "fill: the reader returned \(count) for \(free.count) bytes")
        guard count > 0 else { return false }
        try commit(count)
        return true
    }

    /// Compresses what is left and hands every remaining byte to the sink; rethrows what a worker threw.
    func finish() throws {
        precondition(!finished, "ChunkedCompressor.finish called twice")
        finished = true
        if currentCount > 0 || pipeline.handedOver == 0 {
            _ = try currentSlot()
            pipeline.handOver(count: currentCount)
        }
        try pipeline.waitUntilDrained()
    }

    private func currentSlot() throws -> ChunkSlot {
        if let current { return current }
        let slot = try pipeline.nextFreeSlot()
        current = slot
        currentCount = 0
        return slot
    }

    private func commit(_ count: Int) throws {
        currentCount += count
        guard let slot = current, currentCount == slot.input.count else { return }
        pipeline.handOver(count: currentCount)
        current = nil
        currentCount = 0
    }
}

/// One chunk's input and compressed output buffers, reused for chunk n, n + slots, n + 2·slots, …
private final class ChunkSlot {
    let input: UnsafeMutableRawBufferPointer
    let output: UnsafeMutableRawBufferPointer
    /// Set with the pipeline's lock held, before the jobs that read them start.
    var inputCount = 0
    var outputCount = 0
    var compressed = false

    init(outputBound: Int) {
        input = .allocate(byteCount: LayerCompression.chunkSize, alignment: 64)
        output = .allocate(byteCount: outputBound, alignment: 64)
    }

    deinit {
        input.deallocate()
        output.deallocate()
    }

    // The buffers are allocated with a non-zero size, so their base addresses exist.
    var inputBase: UnsafeMutableRawPointer { input.baseAddress.unsafelyUnwrapped }
    var filledInput: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: input.baseAddress, count: inputCount) }
    var compressedOutput: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: output.baseAddress, count: outputCount)
    }
}

/// The shared state of one compressor's pipeline. Chunk n lives in slot n % slots.count.
private final class ChunkPipeline: @unchecked Sendable {
    // @unchecked: every `var` here is touched only with `condition` locked. A slot's buffers are written by
    // the caller before `handOver` and by the one `compress` job of its chunk, and read by jobs that start
    // after those ended (the lock orders them); a slot is given back to the caller only when all are done.
    private let condition = NSCondition()
    private let slots: [ChunkSlot]
    private let observeInput: ((UnsafeRawBufferPointer) throws -> Void)?
    private let sink: (UnsafeRawBufferPointer) throws -> Void
    /// Chunks the caller has handed over, started compressing, observed, and given to the sink.
    private(set) var handedOver = 0
    private var compressStarted = 0
    private var observed = 0
    private var emitted = 0
    private var observing = false
    private var emitting = false
    private var failure: Error?
    private var stopping = false
    private var running = 0

    private enum Job {
        case emit(Int), observe(Int), compress(Int)
    }

    init(
        slots: [ChunkSlot], observeInput: ((UnsafeRawBufferPointer) throws -> Void)?,
        sink: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) {
        self.slots = slots
        self.observeInput = observeInput
        self.sink = sink
    }

    func startWorker(_ encoder: ChunkEncoder) {
        condition.lock()
        running += 1
        condition.unlock()
        let thread = Thread { [self] in work(encoder) }
        thread.name = "hermetic-compress"
        thread.start()
    }

    /// The slot for the next chunk, once its last use is over. Throws what a worker threw.
    func nextFreeSlot() throws -> ChunkSlot {
        condition.lock()
        defer { condition.unlock() }
        while failure == nil, handedOver - min(emitted, observed) >= slots.count { condition.wait() }
        if let failure { throw failure }
        return slots[handedOver % slots.count]
    }

    func handOver(count: Int) {
        condition.lock()
        let slot = slots[handedOver % slots.count]
        slot.inputCount = count
        slot.compressed = false
        handedOver += 1
        if observeInput == nil { observed = handedOver }
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until every chunk handed over is observed and given to the sink, then stops the workers.
    func waitUntilDrained() throws {
        condition.lock()
        while failure == nil, emitted < handedOver || observed < handedOver { condition.wait() }
        let failed = failure
        condition.unlock()
        stop()
        if let failed { throw failed }
    }

    /// Stops the workers and waits for them to end (a job under way finishes first).
    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while running > 0 { condition.wait() }
        condition.unlock()
    }

    private func work(_ encoder: ChunkEncoder) {
        condition.lock()
        while !stopping {
            guard failure == nil, let job = nextJob() else {
                condition.wait()
                continue
            }
            condition.unlock()
            let outcome = Result { try run(job, encoder) }
            condition.lock()
            complete(job, outcome)
            condition.broadcast()
        }
        running -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// The oldest chunk's sink and observer calls first (they free slots), then compression.
    private func nextJob() -> Job? {
        if !emitting, emitted < handedOver, slots[emitted % slots.count].compressed {
            emitting = true
            return .emit(emitted)
        }
        if !observing, observed < handedOver {
            observing = true
            return .observe(observed)
        }
        if compressStarted < handedOver {
            compressStarted += 1
            return .compress(compressStarted - 1)
        }
        return nil
    }

    /// Runs `job` without the lock; returns the compressed size for a `compress` job.
    private func run(_ job: Job, _ encoder: ChunkEncoder) throws -> Int {
        switch job {
        case .emit(let chunk):
            try sink(slots[chunk % slots.count].compressedOutput)
        case .observe(let chunk):
            try observeInput?(slots[chunk % slots.count].filledInput)
        case .compress(let chunk):
            let slot = slots[chunk % slots.count]
            return try encoder.encode(slot.filledInput, into: slot.output)
        }
        return 0
    }

    private func complete(_ job: Job, _ outcome: Result<Int, Error>) {
        if case .failure(let error) = outcome, failure == nil { failure = error }
        switch job {
        case .emit:
            emitted += 1
            emitting = false
        case .observe:
            observed += 1
            observing = false
        case .compress(let chunk):
            if case .success(let written) = outcome { slots[chunk % slots.count].outputCount = written }
            slots[chunk % slots.count].compressed = true
        }
    }
}

struct CompressionFailure: Error, CustomStringConvertible {
    var description: String
}

/// One libdeflate compressor or one zstd context, used by one thread at a time. The bytes it makes depend
/// on the input and the level only, not on what it compressed before.
private final class ChunkEncoder: @unchecked Sendable {
    // @unchecked: each encoder belongs to one worker thread, which alone calls `encode`.
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
