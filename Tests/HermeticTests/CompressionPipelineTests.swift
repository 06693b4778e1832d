import Foundation
import TestSupport
import Testing

@testable import Hermetic

/// The pipelined compressor: its blob is the chunks compressed one by one and concatenated, whatever the
/// number of workers and whichever way the input comes in; its observer sees the input in order; a failure
/// on a worker reaches the caller; and outside tools read what `LayerWriter.compressTar` writes.
@Suite struct CompressionPipelineTests {
    /// 9.25 MiB (more chunks than the ring has slots for two workers): text, then bytes that do not compress.
    static let sample: [UInt8] = {
        var bytes: [UInt8] = []
        let line = Array("pack my box with five dozen liquor jugs 0123456789\n".utf8)
        while bytes.count < 4_000_000 { bytes += line }
        var state: UInt64 = 0x9e37_79b9_7f4a_7c15
        while bytes.count < 9 * LayerCompression.chunkSize + LayerCompression.chunkSize / 4 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            bytes.append(UInt8(truncatingIfNeeded: state))
        }
        return bytes
    }()

    /// The format written out by hand: each 1 MiB piece through its own one-chunk compressor, concatenated.
    static func chunkByChunk(_ input: [UInt8], _ compression: LayerCompression) throws -> [UInt8] {
        var blob: [UInt8] = []
        var offset = 0
        repeat {
            let end = min(input.count, offset + LayerCompression.chunkSize)
            blob += try ChunkedCompressorTests.compress(Array(input[offset..<end]), compression, workers: 1)
            offset = end
        } while offset < input.count
        return blob
    }

    /// Feeds `input` through `fill`, `read` bytes at a time at most (a short reader, as a pipe can be).
    static func compressByFilling(_ input: [UInt8], _ compression: LayerCompression, workers: Int, read: Int)
        throws -> (blob: [UInt8], observed: [UInt8])
    {
        var blob: [UInt8] = []
        var observed: [UInt8] = []
        let compressor = try ChunkedCompressor(
            compression, workers: workers, observeInput: { observed += $0 }, sink: { blob += $0 })
        var offset = 0
        while try compressor.fill({ free in
            let count = min(read, free.count, input.count - offset)
            input[offset..<offset + count].withUnsafeBytes { free.copyMemory(from: $0) }
            offset += count
            return count
        }) {}
        try compressor.finish()
        return (blob, observed)
    }

    @Test(arguments: [LayerCompression.gzip(level: 6), .zstd(level: 3)])
    func theBlobIsEachChunkCompressedAloneWhateverTheWorkers(_ compression: LayerCompression) throws {
        let expected = try Self.chunkByChunk(Self.sample, compression)
        for workers in [1, 2, 3, 8] {
            #expect(try ChunkedCompressorTests.compress(Self.sample, compression, workers: workers) == expected)
            let filled = try Self.compressByFilling(Self.sample, compression, workers: workers, read: 65_537)
            #expect(filled.blob == expected, "fill with \(workers) workers")
            #expect(filled.observed == Self.sample, "the observer saw the input in order")
        }
    }

    @Test func anEmptyInputThroughFillIsOneMemberOfNothing() throws {
        let filled = try Self.compressByFilling([], .gzip(level: 6), workers: 2, read: 10)
        #expect(filled.blob == (try ChunkedCompressorTests.compress([], .gzip(level: 6), workers: 1)))
        #expect(filled.observed.isEmpty)
    }

    struct Refused: Error, Equatable { var chunk: Int }

    @Test(arguments: [1, 2, 4])
    func aSinkFailureReachesTheCaller(workers: Int) throws {
        var calls = 0
        let compressor = try ChunkedCompressor(.zstd(level: 3), workers: workers) { _ in
            calls += 1
            if calls == 3 { throw Refused(chunk: 3) }
        }
        #expect(throws: Refused(chunk: 3)) {
            try Self.sample.withUnsafeBytes { all in
                // More than the ring holds: the caller waits for a slot, and learns of the failure there.
                for _ in 0..<4 { try compressor.write(all) }
            }
            try compressor.finish()
        }
        #expect(calls == 3, "nothing is handed to the sink after it failed")
    }

    @Test func anObserverFailureReachesTheCaller() throws {
        let compressor = try ChunkedCompressor(
            .gzip(level: 1), workers: 2, observeInput: { _ in throw Refused(chunk: 0) }, sink: { _ in })
        #expect(throws: Refused(chunk: 0)) {
            try Self.sample.withUnsafeBytes { try compressor.write($0) }
            try compressor.finish()
        }
    }

    /// `compressTar` reads the tar straight into the chunks: its blob is the format's, `gzip -t`, `zstd -t` and
    /// Python's gzip read it back to the tar, and its digests are those of its bytes.
    @Test(arguments: [LayerCompression.gzip(level: 6), .zstd(level: 3)])
    func compressTarIsReadByOutsideTools(_ compression: LayerCompression) throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let tarPath = dir + "/layer.tar"
        try Data(Self.sample).write(to: URL(fileURLWithPath: tarPath))
        let diffID = Digest.sha256(of: Self.sample)
        var digests: Set<Digest> = []
        for workers in [1, 3] {
            let writer = LayerWriter(sourceDateEpoch: 0, compression: compression, workers: workers)
            let layer = try writer.compressTar(at: tarPath, diffID: diffID, into: dir)
            let blob = try readFile(layer.blobPath)
            #expect(blob == (try Self.chunkByChunk(Self.sample, compression)))
            #expect(layer.digest == Digest.sha256(of: blob) && layer.compressedSize == Int64(blob.count))
            #expect(layer.diffID == diffID && layer.uncompressedSize == Int64(Self.sample.count))
            digests.insert(layer.digest)
            let tester = compression == .zstd(level: 3) ? "/usr/bin/zstd" : "/usr/bin/gzip"
            let tested = try HermeticProcess.run(tester, ["-t", layer.blobPath])
            #expect(tested.status == 0, "\(tester) -t: \(tested.standardError)")
            #expect(try ChunkedCompressorTests.outsideRead(blob, compression).bytes == Self.sample)
            unlink(layer.blobPath)
        }
        #expect(digests.count == 1)
    }

    @Test func compressTarRefusesATarThatIsNotItsDiffID() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let tarPath = dir + "/layer.tar"
        try Data(Self.sample).write(to: URL(fileURLWithPath: tarPath))
        let wrong = Digest.sha256(of: Array(Self.sample.dropLast()))
        #expect(throws: LayerError.self) {
            _ = try LayerWriter(sourceDateEpoch: 0, workers: 2).compressTar(at: tarPath, diffID: wrong, into: dir)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["layer.tar"], "no blob is left behind")
    }
}
