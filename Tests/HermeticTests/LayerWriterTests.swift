import CArchive
import Foundation
import Testing

@testable import Hermetic

@Suite struct LayerWriterTests {
    static let epoch: Int64 = 1_700_000_000

    func sampleEntries(in dir: String) throws -> [LayerEntry] {
        let filePath = dir + "/source.bin"
        let contents = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try Data(contents).write(to: URL(fileURLWithPath: filePath))
        return [
            LayerEntry(path: "usr", kind: .directory, mode: 0o755, mtime: 5),
            LayerEntry(path: "usr/bin", kind: .directory, mode: 0o755, uid: 0, gid: 0, mtime: 2_000_000_000),
            LayerEntry(
                path: "usr/bin/tool", kind: .regular(.file(path: filePath, size: Int64(contents.count))),
                mode: 0o4755, uid: 1000, gid: 1001, mtime: 1_600_000_000),
            LayerEntry(path: "usr/bin/link", kind: .symlink(target: "../../etc/passwd"), mode: 0o777),
            LayerEntry(path: "usr/bin.d", kind: .regular(.bytes(Array("hi\n".utf8))), mode: 0o644),
            LayerEntry(path: "etc", kind: .directory, mode: 0o755, xattrs: ["user.b": [1], "user.a": [2, 3]]),
            LayerEntry(path: "etc/fifo", kind: .fifo, mode: 0o600),
            LayerEntry(path: "etc/null", kind: .characterDevice(major: 1, minor: 3), mode: 0o666),
        ]
    }

    @Test func identicalBytesForAnyInputOrder() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let entries = try sampleEntries(in: dir)
        let writer = LayerWriter(sourceDateEpoch: Self.epoch)
        let first = try writer.write(entries, into: dir)
        let second = try writer.write(entries.reversed(), into: dir)
        let third = try writer.write(entries.shuffled(), into: dir)
        #expect(first.digest == second.digest && second.digest == third.digest)
        #expect(first.diffID == second.diffID && first.diffID == third.diffID)
        #expect(first.blobPath != second.blobPath)
        #expect(try readFile(first.blobPath) == readFile(second.blobPath))
        #expect(first.mediaType == "application/vnd.oci.image.layer.v1.tar+gzip")
        #expect(Int64(try readFile(first.blobPath).count) == first.compressedSize)

        // Directory names carry libarchive's trailing '/'.
        let names = try readTar(at: first.blobPath).map { String(decoding: $0.header.pathname, as: UTF8.self) }
        #expect(
            names == ["etc/", "etc/fifo", "etc/null", "usr/", "usr/bin/", "usr/bin/link", "usr/bin/tool", "usr/bin.d"])
    }

    /// Golden digests: computed once in another process, so PIDs, clocks and the temp name
    /// do not leak into the bytes. The blob digest was reproduced by a separate C program that cuts the
    /// tar every 1 MiB and gzips each piece with libdeflate level 6 (SPEC §3).
    @Test func matchesGoldenDigests() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let writer = LayerWriter(sourceDateEpoch: Self.epoch)
        let long = String(repeating: "d", count: 120) + "/" + String(repeating: "f", count: 150)
        let layer = try writer.write(
            [
                LayerEntry(path: "a", kind: .regular(.bytes(Array("x".utf8))), mode: 0o644, mtime: 9_999_999_999),
                LayerEntry(path: long, kind: .regular(.bytes([])), mode: 0o600, xattrs: ["user.k": [0, 1]]),
                LayerEntry(path: "é", kind: .symlink(target: "a"), mode: 0o777),
            ], into: dir)
        #expect(layer.diffID.description == "sha256:62334c37f117c26e4521c8da5e20aef45df3826ff1ad24c86f9c06a676fda77c")
        #expect(layer.digest.description == "sha256:52886be56e4999bf6504b0c90cdde963042d5f6c2a48871e3b71776b970cc49f")
    }

    @Test func clampsMtimesAndWritesNumericOwners() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let entries = try sampleEntries(in: dir)
        let layer = try LayerWriter(sourceDateEpoch: Self.epoch).write(entries, into: dir)
        let read = try readTar(at: layer.blobPath)
        let byName = Dictionary(
            uniqueKeysWithValues: read.map {
                (String(decoding: $0.header.pathname, as: UTF8.self).trimmingSuffix("/"), $0)
            })
        for entry in entries {
            let item = try #require(byName[entry.path])
            #expect(item.header.mtime == min(entry.mtime, Self.epoch), "\(entry.path)")
            #expect(item.header.uid == Int64(entry.uid))
            #expect(item.header.gid == Int64(entry.gid))
            #expect(item.header.mode == entry.mode)
            #expect(item.uname.isEmpty && item.gname.isEmpty, "\(entry.path) has uname/gname")
            #expect(!item.hasAtime && !item.hasCtime && !item.hasBirthtime)
        }
        #expect(byName["usr/bin"]?.header.mtime == Self.epoch)
        #expect(byName["usr/bin/tool"]?.header.mode == 0o4755)
        #expect(byName["usr/bin/tool"]?.data == (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        #expect(byName["usr/bin/link"]?.header.symlink == Array("../../etc/passwd".utf8))
        #expect(byName["etc/null"]?.header.type == .characterDevice)
        #expect(byName["etc/null"]?.header.rdevMajor == 1 && byName["etc/null"]?.header.rdevMinor == 3)
        #expect(byName["etc/fifo"]?.header.type == .fifo)
        let xattrs = byName["etc"]?.header.xattrs ?? []
        #expect(
            Dictionary(xattrs.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a }) == [
                "user.a": [2, 3], "user.b": [1],
            ])
    }

    @Test func gzipHeaderHasNoNameAndNoTime() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let layer = try LayerWriter(sourceDateEpoch: Self.epoch).write(try sampleEntries(in: dir), into: dir)
        let blob = try readFile(layer.blobPath)
        #expect(Array(blob.prefix(4)) == [0x1f, 0x8b, 0x08, 0x00])  // FLG 0: no FNAME/FEXTRA/FCOMMENT
        #expect(Array(blob[4..<8]) == [0, 0, 0, 0])
        #expect(blob[9] == 0xff)  // OS "unknown", as libdeflate writes it
    }

    @Test func diffIDIsTheHashOfTheDecompressedBlob() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let writer = LayerWriter(sourceDateEpoch: Self.epoch)
        let entries = try sampleEntries(in: dir)
        let layer = try writer.write(entries, into: dir)
        let tar = try decompress(at: layer.blobPath)
        #expect(Digest.sha256(of: tar) == layer.diffID)
        #expect(Int64(tar.count) == layer.uncompressedSize)
        #expect(Digest.sha256(of: try readFile(layer.blobPath)) == layer.digest)
        #expect(tar.count % 512 == 0)
        #expect(tar.suffix(1024).allSatisfy { $0 == 0 })
        let plain = try writer.writeUncompressedTar(entries, into: dir)
        #expect(try readFile(plain.blobPath) == tar)
        #expect(plain.diffID == layer.diffID && plain.digest == plain.diffID)
    }

    /// The PAX extended header libarchive emits must be deterministic: its name is derived from
    /// the entry's name only and its mtime is the entry's clamped mtime.
    @Test func paxExtendedHeaderHasNoPIDOrTime() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let long = "dir/" + String(repeating: "n", count: 110)
        let layer = try LayerWriter(sourceDateEpoch: Self.epoch).writeUncompressedTar(
            [
                LayerEntry(
                    path: long, kind: .regular(.bytes([])), mode: 0o644, mtime: 77,
                    xattrs: ["user.z": [1], "user.a": [2]])
            ],
            into: dir)
        let tar = try readFile(layer.blobPath)
        #expect(tar[156] == UInt8(ascii: "x"))
        let name = String(decoding: tar[0..<100].prefix { $0 != 0 }, as: UTF8.self)
        #expect(name.hasPrefix("PaxHeader/nnnn"))
        #expect(!name.contains(String(getpid())))
        let mtimeField = String(decoding: tar[136..<148].prefix { $0 != 0 && $0 != 0x20 }, as: UTF8.self)
        #expect(Int64(mtimeField, radix: 8) == 77)
        let text = String(decoding: tar[512..<1024], as: UTF8.self)
        #expect(text.contains("SCHILY.xattr.user.a="))
        #expect(
            text.range(of: "SCHILY.xattr.user.a=")?.lowerBound ?? text.endIndex < text.range(
                of: "SCHILY.xattr.user.z=")?.lowerBound ?? text.startIndex)
        for absent in ["LIBARCHIVE", "atime=", "ctime=", "mtime=", "uname", "gname", "SCHILY.dev", "SCHILY.ino"] {
            #expect(!text.contains(absent), "PAX header contains \(absent)")
        }
        #expect(tar[265..<329].allSatisfy { $0 == 0 })  // uname, gname
        #expect(tar[512 + 265..<512 + 329].allSatisfy { $0 == 0 })
    }

    @Test func longAndNonASCIIPathsRoundTrip() throws {
        setlocale(LC_ALL, "C.UTF-8")
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let over100 = String(repeating: "a", count: 60) + "/" + String(repeating: "b", count: 60)
        let over255 = (0..<30).map { _ in "component" }.joined(separator: "/")
        let unicode = "données/日本語/ファイル-é"
        let longLink = String(repeating: "t", count: 200)
        let entries = [
            LayerEntry(path: over100, kind: .regular(.bytes([1])), mode: 0o644),
            LayerEntry(path: over255, kind: .regular(.bytes([2])), mode: 0o644),
            LayerEntry(path: unicode, kind: .symlink(target: longLink + "/ü"), mode: 0o777),
            LayerEntry(path: String(repeating: "x", count: 101), kind: .hardlink(target: over255), mode: 0o644),
        ]
        let layer = try LayerWriter(sourceDateEpoch: Self.epoch).write(entries, into: dir)
        let read = try readTar(at: layer.blobPath)
        let names = Set(read.map { String(decoding: $0.header.pathname, as: UTF8.self).trimmingSuffix("/") })
        #expect(names == Set(entries.map(\.path)))
        let link = try #require(read.first { String(decoding: $0.header.pathname, as: UTF8.self) == unicode })
        #expect(link.header.symlink == Array((longLink + "/ü").utf8))
    }

    @Test func hardlinksBecomeTarHardlinksToTheFirstMember() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let entries = [
            LayerEntry(path: "z", kind: .regular(.bytes(Array("data".utf8))), mode: 0o640, uid: 5, mtime: 1),
            LayerEntry(path: "a", kind: .hardlink(target: "z"), mode: 0o644),
            LayerEntry(path: "m", kind: .hardlink(target: "a"), mode: 0o644),
            LayerEntry(path: "lower", kind: .hardlink(target: "usr/lib/x"), mode: 0o644),
        ]
        let read = try readTar(at: LayerWriter(sourceDateEpoch: Self.epoch).write(entries, into: dir).blobPath)
        #expect(read.map { String(decoding: $0.header.pathname, as: UTF8.self) } == ["a", "lower", "m", "z"])
        #expect(read[0].header.hardlink == nil && read[0].data == Array("data".utf8))
        #expect(read[0].header.mode == 0o640 && read[0].header.uid == 5)
        #expect(read[1].header.hardlink == Array("usr/lib/x".utf8))
        #expect(read[2].header.hardlink == Array("a".utf8) && read[2].data.isEmpty)
        #expect(read[3].header.hardlink == Array("a".utf8))
    }

    @Test(arguments: [
        ("", "is empty"), ("/abs", "is absolute"), ("a/../b", "'..'"), ("a\0b", "NUL"),
        ("a//b", "empty component"), ("a/", "trailing"), ("./a", "'.'"),
        (String(repeating: "p", count: 4097), "longer than 4096"), (".wh...", "invalid whiteout name .wh..."),
        ("a/.wh..", "invalid whiteout name .wh.."), ("a/.wh./b", "invalid whiteout name .wh."),
    ])
    func rejectsInvalidPaths(path: String, reason: String) throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        do {
            _ = try LayerWriter(sourceDateEpoch: 0).write(
                [LayerEntry(path: path, kind: .directory, mode: 0o755)], into: dir)
            Issue.record("accepted \(path)")
        } catch let error as LayerError {
            #expect(error.description.contains(reason))
            #expect(error.description.hasPrefix("layer entry \"\(displayable(path).prefix(200))"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    @Test func rejectsDuplicatesAndFileParents() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let writer = LayerWriter(sourceDateEpoch: 0)
        #expect(throws: LayerError.invalidEntry(path: "a", reason: "duplicate path")) {
            try writer.write(
                [LayerEntry(path: "a", kind: .directory, mode: 0o755), LayerEntry(path: "a", kind: .fifo, mode: 0)],
                into: dir)
        }
        #expect(throws: LayerError.self) {
            try writer.write(
                [LayerEntry(path: "a", kind: .fifo, mode: 0), LayerEntry(path: "a/b", kind: .fifo, mode: 0)], into: dir)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    @Test func sourceSizeChangeFailsAndLeavesNothing() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let out = dir + "/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        try Data(count: 10).write(to: URL(fileURLWithPath: dir + "/f"))
        for declared: Int64 in [9, 11] {
            #expect(throws: LayerError.sourceSizeChanged(path: "f", source: dir + "/f", expected: declared, actual: 10))
            {
                try LayerWriter(sourceDateEpoch: 0).write(
                    [LayerEntry(path: "f", kind: .regular(.file(path: dir + "/f", size: declared)), mode: 0o644)],
                    into: out)
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).isEmpty)
    }

    @Test func throughput() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        // Base64-like text (about 75% of random bytes' entropy): a 1 MiB chunk repeated, which
        // deflate cannot exploit beyond its 32 KiB window.
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var state: UInt64 = 0x9e37_79b9_7f4a_7c15
        for index in chunk.indices {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            chunk[index] = alphabet[Int(state >> 58)]
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64 << 20)
        for _ in 0..<64 { bytes += chunk }
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/big"))
        let entries = [
            LayerEntry(path: "big", kind: .regular(.file(path: dir + "/big", size: Int64(bytes.count))), mode: 0o644)
        ]
        let writer = LayerWriter(sourceDateEpoch: 0)
        let clock = ContinuousClock()
        var tar: WrittenLayer?
        let tarTime = try clock.measure { tar = try writer.writeUncompressedTar(entries, into: dir) }
        var gzip: WrittenLayer?
        let gzipTime = try clock.measure { gzip = try writer.write(entries, into: dir) }
        func rate(_ duration: Duration) -> Double {
            let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
            return Double(bytes.count) / 1_048_576 / seconds
        }
        print(
            "LayerWriter throughput on 64 MiB: tar+sha256 \(Int(rate(tarTime))) MB/s, tar+gzip-6+2×sha256 \(Int(rate(gzipTime))) MB/s"
        )
        #expect(tar?.diffID == gzip?.diffID)
    }
}

// MARK: - Helpers shared by the layer and archive tests

func makeTemporaryDirectory() throws -> String {
    var template = Array((NSTemporaryDirectory() + "/hermetic-layer-XXXXXX").utf8CString)
    let made = template.withUnsafeMutableBufferPointer { $0.baseAddress.flatMap { mkdtemp($0) } }
    guard made != nil else { throw SystemError("mkdtemp", path: NSTemporaryDirectory(), errno: errno) }
    return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}

func removeTree(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}

func readFile(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

struct ReadBackEntry {
    var header: ReadHeader
    var data: [UInt8]
    var uname: [UInt8]
    var gname: [UInt8]
    var hasAtime: Bool
    var hasCtime: Bool
    var hasBirthtime: Bool
}

/// Reads a (possibly compressed) tar with libarchive, every header and its data.
func readTar(at path: String) throws -> [ReadBackEntry] {
    let reader = try ArchiveReader(subject: path)
    archive_read_support_format_tar(reader.handle)
    archive_read_support_filter_all(reader.handle)
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
    defer { close(fd) }
    try reader.open(fileDescriptor: fd)
    var result: [ReadBackEntry] = []
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
    defer { buffer.deallocate() }
    while let entry = try reader.nextHeader() {
        var data: [UInt8] = []
        while true {
            let count = try reader.readData(into: buffer)
            if count == 0 { break }
            data += buffer[0..<count]
        }
        func bytes(_ pointer: UnsafePointer<CChar>?) -> [UInt8] {
            guard let pointer else { return [] }
            return Array(UnsafeRawBufferPointer(start: pointer, count: strlen(pointer)))
        }
        result.append(
            ReadBackEntry(
                header: ReadHeader(entry), data: data, uname: bytes(archive_entry_uname(entry)),
                gname: bytes(archive_entry_gname(entry)), hasAtime: archive_entry_atime_is_set(entry) != 0,
                hasCtime: archive_entry_ctime_is_set(entry) != 0,
                hasBirthtime: archive_entry_birthtime_is_set(entry) != 0))
    }
    return result
}

/// Decompresses any libarchive-supported compressed file in full.
func decompress(at path: String) throws -> [UInt8] {
    let reader = try ArchiveReader(subject: path)
    archive_read_support_format_raw(reader.handle)
    archive_read_support_filter_all(reader.handle)
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw SystemError("open", path: path, errno: errno) }
    defer { close(fd) }
    try reader.open(fileDescriptor: fd)
    _ = try reader.nextHeader()
    var data: [UInt8] = []
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
    defer { buffer.deallocate() }
    while true {
        let count = try reader.readData(into: buffer)
        if count == 0 { break }
        data += buffer[0..<count]
    }
    return data
}
