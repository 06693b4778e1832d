import Foundation
import TestSupport
import Testing

@testable import Hermetic

/// The compressed bytes depend on the input and the level only, and outside readers read them.
@Suite struct ChunkedCompressorTests {
    /// 3.5 MiB: text that compresses, then bytes that do not, so chunks differ in ratio and time.
    static let sample: [UInt8] = {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(3_670_016)
        let line = Array("the quick brown fox jumps over the lazy dog 0123456789\n".utf8)
        while bytes.count < 2_000_000 { bytes += line }
        var state: UInt64 = 0x2545_f491_4f6c_dd1d
        while bytes.count < 3_670_016 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            bytes.append(UInt8(truncatingIfNeeded: state))
        }
        return bytes
    }()

    static func compress(_ input: [UInt8], _ compression: LayerCompression, workers: Int, piece: Int = 100_003)
        throws -> [UInt8]
    {
        var output: [UInt8] = []
        let compressor = try ChunkedCompressor(compression, workers: workers) { output += $0 }
        var offset = 0
        while offset < input.count {
            let end = min(input.count, offset + piece)
            try input[offset..<end].withUnsafeBytes { try compressor.write($0) }
            offset = end
        }
        try compressor.finish()
        return output
    }

    /// Decompresses with Python's gzip module or the zstd program, and counts gzip members.
    static func outsideRead(_ blob: [UInt8], _ compression: LayerCompression) throws -> (bytes: [UInt8], members: Int) {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let path = dir + "/blob"
        try Data(blob).write(to: URL(fileURLWithPath: path))
        switch compression {
        case .zstd:
            let outcome = try HermeticProcess.run("/usr/bin/zstd", ["-q", "-d", "-c", path, "-o", dir + "/out"])
            #expect(outcome.status == 0, "zstd -d: \(outcome.standardError)")
        default:
            let script = """
                import gzip, sys, zlib
                data = open(sys.argv[1], 'rb').read()
                open(sys.argv[2], 'wb').write(gzip.decompress(data))
                members = 0
                while data:
                    d = zlib.decompressobj(31); d.decompress(data); data = d.unused_data; members += 1
                print(members)
                """
            let outcome = try HermeticProcess.run("/usr/bin/python3", ["-c", script, path, dir + "/out"])
            #expect(outcome.status == 0, "python3 gzip: \(outcome.standardError)")
            let members = Int(outcome.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
            return (try readFile(dir + "/out"), members)
        }
        return (try readFile(dir + "/out"), -1)
    }

    @Test(arguments: [LayerCompression.gzip(level: 6), .zstd(level: 3)])
    func sameBytesWhateverTheNumberOfWorkers(_ compression: LayerCompression) throws {
        let one = try Self.compress(Self.sample, compression, workers: 1)
        let two = try Self.compress(Self.sample, compression, workers: 2, piece: 4096)
        let seven = try Self.compress(Self.sample, compression, workers: 7, piece: 1 << 20)
        #expect(one == two)
        #expect(one == seven)
        #expect(one.count < Self.sample.count)
    }

    @Test(arguments: [
        LayerCompression.gzip(level: 6), .gzip(level: 1), .gzip(level: 9), .zstd(level: 3), .zstd(level: 19),
    ])
    func outsideReadersGiveBackTheInput(_ compression: LayerCompression) throws {
        let blob = try Self.compress(Self.sample, compression, workers: 2)
        let read = try Self.outsideRead(blob, compression)
        #expect(read.bytes == Self.sample)
        if case .gzip = compression { #expect(read.members == 4) }  // 3.5 MiB in 1 MiB chunks
    }

    @Test func levelsGiveDifferentBytes() throws {
        let fast = try Self.compress(Self.sample, .gzip(level: 1), workers: 2)
        let best = try Self.compress(Self.sample, .gzip(level: 9), workers: 2)
        #expect(fast != best)
        #expect(best.count <= fast.count)
    }

    @Test(arguments: [LayerCompression.gzip(level: 6), .zstd(level: 3)])
    func emptyInputIsOneMemberOfNothing(_ compression: LayerCompression) throws {
        let blob = try Self.compress([], compression, workers: 2)
        #expect(!blob.isEmpty)
        let read = try Self.outsideRead(blob, compression)
        #expect(read.bytes.isEmpty)
        if case .gzip = compression { #expect(read.members == 1) }
    }

    @Test func aWholeNumberOfChunksAddsNoEmptyMember() throws {
        let input = Array(Self.sample.prefix(2 * LayerCompression.chunkSize))
        let read = try Self.outsideRead(try Self.compress(input, .gzip(level: 6), workers: 2), .gzip(level: 6))
        #expect(read.bytes == input)
        #expect(read.members == 2)
    }

    @Test func gzipMembersHaveNoNameAndNoTime() throws {
        let blob = try Self.compress(Array(Self.sample.prefix(1000)), .gzip(level: 6), workers: 1)
        #expect(Array(blob.prefix(4)) == [0x1f, 0x8b, 0x08, 0x00])  // FLG 0: no FNAME/FEXTRA/FCOMMENT
        #expect(Array(blob[4..<8]) == [0, 0, 0, 0])  // MTIME 0
    }

    @Test func buildxNamesAndLevels() throws {
        #expect(try LayerCompression(name: "gzip", level: nil) == .gzip(level: 6))
        #expect(try LayerCompression(name: "zstd", level: nil) == .zstd(level: 3))
        #expect(try LayerCompression(name: "zstd", level: 19) == .zstd(level: 19))
        #expect(try LayerCompression(name: "uncompressed", level: nil) == .uncompressed)
        #expect(throws: CompressionChoiceError.unknown("estargz")) { try LayerCompression(name: "estargz", level: nil) }
        #expect(throws: CompressionChoiceError.level("gzip", 10, 0...9)) {
            try LayerCompression(name: "gzip", level: 10)
        }
        #expect(throws: CompressionChoiceError.levelWithoutCompression) {
            try LayerCompression(name: "uncompressed", level: 1)
        }
    }
}
