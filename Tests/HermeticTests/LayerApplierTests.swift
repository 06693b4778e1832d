import CArchive
import Foundation
import Testing

@testable import Hermetic

/// One header written verbatim by libarchive (no validation), to build hostile layers.
struct RawTarEntry {
    enum Kind { case file, directory, symlink, hardlink, fifo, characterDevice }
    var name: String
    var kind: Kind = .file
    var data: [UInt8] = []
    var link: String = ""
    var mode: UInt32 = 0o644
    var uid: Int64 = 0
    var gid: Int64 = 0
    var mtime: Int64 = 1_000
}

enum RawCompression { case none, gzip, xz }

/// Writes entries in the given order with libarchive directly.
func writeRawTar(_ entries: [RawTarEntry], to path: String, compression: RawCompression = .none) throws {
    let writer = try ArchiveWriter(subject: path)
    archive_write_set_format_pax_restricted(writer.handle)
    switch compression {
    case .none: archive_write_add_filter_none(writer.handle)
    case .gzip: archive_write_add_filter_gzip(writer.handle)
    case .xz: archive_write_add_filter_xz(writer.handle)
    }
    guard archive_write_open_filename(writer.handle, path) == ARCHIVE_OK else {
        throw LayerError.archive(subject: path, operation: "open", message: writer.errorString)
    }
    for item in entries {
        let entry = try ArchiveEntryHandle()
        archive_entry_copy_pathname(entry.handle, item.name)
        archive_entry_set_perm(entry.handle, mode_t(item.mode))
        archive_entry_set_uid(entry.handle, item.uid)
        archive_entry_set_gid(entry.handle, item.gid)
        archive_entry_set_mtime(entry.handle, time_t(item.mtime), 0)
        switch item.kind {
        case .file:
            archive_entry_set_filetype(entry.handle, FileTypeBits.regular)
            archive_entry_set_size(entry.handle, Int64(item.data.count))
        case .directory: archive_entry_set_filetype(entry.handle, FileTypeBits.directory)
        case .symlink:
            archive_entry_set_filetype(entry.handle, FileTypeBits.symlink)
            archive_entry_copy_symlink(entry.handle, item.link)
        case .hardlink:
            archive_entry_set_filetype(entry.handle, FileTypeBits.regular)
            archive_entry_copy_hardlink(entry.handle, item.link)
        case .fifo: archive_entry_set_filetype(entry.handle, FileTypeBits.fifo)
        case .characterDevice:
            archive_entry_set_filetype(entry.handle, FileTypeBits.characterDevice)
            archive_entry_set_rdevmajor(entry.handle, 1)
            archive_entry_set_rdevminor(entry.handle, 3)
        }
        try writer.check(archive_write_header(writer.handle, entry.handle), "header")
        if !item.data.isEmpty { try item.data.withUnsafeBytes { try writer.writeData($0) } }
    }
    try writer.check(archive_write_close(writer.handle), "close")
}

func lstatOf(_ path: String) -> stat? {
    var status = stat()
    return lstat(path, &status) == 0 ? status : nil
}

func fileType(_ status: stat?) -> UInt32? { status.map { UInt32($0.st_mode) & FileTypeBits.mask } }

let tarMediaType = "application/vnd.oci.image.layer.v1.tar"

@Suite(.serialized) struct LayerApplierTests {
    @Test func appliesEveryFieldExactlyRegardlessOfUmask() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let root = dir + "/root"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: false)
        let entries = [
            LayerEntry(path: "bin", kind: .directory, mode: 0o555, uid: 0, gid: 0, mtime: 1234),
            LayerEntry(
                path: "bin/su", kind: .regular(.bytes(Array("binary".utf8))), mode: 0o4755, uid: 0, gid: 0, mtime: 100),
            LayerEntry(
                path: "home/u/f", kind: .regular(.bytes([1, 2, 3])), mode: 0o640, uid: 1000, gid: 1001, mtime: 200),
            LayerEntry(
                path: "home/u/link", kind: .symlink(target: "/etc/passwd"), mode: 0o777, uid: 1000, gid: 1001,
                mtime: 300),
            LayerEntry(path: "home/u/hard", kind: .hardlink(target: "home/u/f"), mode: 0o640),
            LayerEntry(path: "tmp", kind: .directory, mode: 0o1777, mtime: 400),
            LayerEntry(path: "tmp/pipe", kind: .fifo, mode: 0o620, uid: 7, gid: 8, mtime: 500),
            LayerEntry(path: "dev/null", kind: .characterDevice(major: 1, minor: 3), mode: 0o666),
        ]
        let layer = try LayerWriter(sourceDateEpoch: 10_000).write(entries, into: dir)
        let savedMask = umask(0o077)
        defer { umask(savedMask) }
        let applied = try LayerApplier().applyReporting(
            blobAt: layer.blobPath, mediaType: layer.mediaType, expectedDiffID: layer.diffID, toRoot: root)
        #expect(applied.diffID == layer.diffID)
        #expect(applied.warnings.count == 1 && applied.warnings[0].contains("dev/null"))
        #expect(lstatOf(root + "/dev/null") == nil)

        let su = try #require(lstatOf(root + "/bin/su"))
        #expect(UInt32(su.st_mode) & 0o7777 == 0o4755 && su.st_mtim.tv_sec == 100 && su.st_uid == 0)
        let bin = try #require(lstatOf(root + "/bin"))
        #expect(UInt32(bin.st_mode) & 0o7777 == 0o555 && bin.st_mtim.tv_sec == 1234)
        let file = try #require(lstatOf(root + "/home/u/f"))
        #expect(UInt32(file.st_mode) & 0o7777 == 0o640 && file.st_uid == 1000 && file.st_gid == 1001)
        #expect(file.st_mtim.tv_sec == 200 && file.st_nlink == 2)
        #expect(try readFile(root + "/home/u/f") == [1, 2, 3])
        #expect(lstatOf(root + "/home/u/hard")?.st_ino == file.st_ino)
        let link = try #require(lstatOf(root + "/home/u/link"))
        #expect(fileType(link) == FileTypeBits.symlink && link.st_uid == 1000 && link.st_mtim.tv_sec == 300)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: root + "/home/u/link") == "/etc/passwd")
        let pipe = try #require(lstatOf(root + "/tmp/pipe"))
        #expect(fileType(pipe) == FileTypeBits.fifo && UInt32(pipe.st_mode) & 0o7777 == 0o620 && pipe.st_uid == 7)
        #expect(UInt32(try #require(lstatOf(root + "/tmp")).st_mode) & 0o7777 == 0o1777)
        // Implicit parents: 0755 and time 0, whatever the umask.
        let home = try #require(lstatOf(root + "/home"))
        #expect(UInt32(home.st_mode) & 0o7777 == 0o755 && home.st_mtim.tv_sec == 0)
    }

    func lowerLayer(in dir: String, root: String) throws {
        let lower = dir + "/lower.tar"
        try writeRawTar(
            [
                RawTarEntry(name: "a", kind: .directory, mode: 0o755),
                RawTarEntry(name: "a/old", data: [1]), RawTarEntry(name: "a/keep", data: [2]),
                RawTarEntry(name: "d", kind: .directory, mode: 0o755),
                RawTarEntry(name: "d/sub", kind: .directory, mode: 0o755),
                RawTarEntry(name: "d/sub/old", data: [3]), RawTarEntry(name: "d/lowerfile", data: [4]),
                RawTarEntry(name: "f", data: [5]),
            ], to: lower)
        _ = try LayerApplier().apply(blobAt: lower, mediaType: tarMediaType, expectedDiffID: nil, toRoot: root)
    }

    /// Writes `entries` as an uncompressed tar (in that order) and applies it over `root`.
    func applyRawLayer(_ entries: [RawTarEntry], in dir: String, root: String) throws {
        try writeRawTar(entries, to: dir + "/upper.tar")
        _ = try LayerApplier().apply(
            blobAt: dir + "/upper.tar", mediaType: tarMediaType, expectedDiffID: nil, toRoot: root)
    }

    @Test(arguments: [false, true])
    func whiteoutsAndOpaqueDirectoriesInEitherOrder(reversed: Bool) throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let root = dir + "/root"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: false)
        try lowerLayer(in: dir, root: root)
        let upper = [
            RawTarEntry(name: "d/.wh..wh..opq"),
            RawTarEntry(name: "d/sub", kind: .directory, mode: 0o700),
            RawTarEntry(name: "d/new", data: [9]),
            RawTarEntry(name: ".wh.f"),
            RawTarEntry(name: "a/.wh.old"),
            RawTarEntry(name: "same", data: [7]),
            RawTarEntry(name: ".wh.same"),
        ]
        try applyRawLayer(reversed ? upper.reversed() : upper, in: dir, root: root)
        let fm = FileManager.default
        #expect(try fm.contentsOfDirectory(atPath: root + "/d").sorted() == ["new", "sub"])
        #expect(try fm.contentsOfDirectory(atPath: root + "/d/sub").isEmpty)
        #expect(UInt32(try #require(lstatOf(root + "/d/sub")).st_mode) & 0o777 == 0o700)
        #expect(try fm.contentsOfDirectory(atPath: root + "/a") == ["keep"])
        #expect(lstatOf(root + "/f") == nil)
        #expect(try readFile(root + "/same") == [7])
        #expect(try fm.contentsOfDirectory(atPath: root).sorted() == ["a", "d", "same"])
        // `a` was changed but not listed: its lower mtime (1000) is kept.
        #expect(lstatOf(root + "/a")?.st_mtim.tv_sec == 1000)
    }

    /// A whiteout of a directory that entries of the same layer fill: the lower contents go and the layer's
    /// stay, whether the whiteout comes before those entries or after them.
    @Test(arguments: [false, true])
    func whiteoutOfADirectoryTheLayerFillsInEitherOrder(reversed: Bool) throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let root = dir + "/root"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: false)
        try lowerLayer(in: dir, root: root)
        let upper = [
            RawTarEntry(name: ".wh.a"), RawTarEntry(name: "a/new", data: [8]), RawTarEntry(name: "d/x", data: [6]),
            RawTarEntry(name: ".wh.d"),
        ]
        try applyRawLayer(reversed ? upper.reversed() : upper, in: dir, root: root)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/a") == ["new"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/d") == ["x"])
        #expect(try readFile(root + "/a/new") == [8])
    }

    /// Whiteouts and opaque directories 1000 levels down mean what they mean at the top, in any order.
    @Test(arguments: [false, true])
    func deepWhiteoutsAndOpaqueDirectoriesInEitherOrder(reversed: Bool) throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let root = dir + "/root"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: false)
        let middle = Array(repeating: "d", count: 500).joined(separator: "/")
        let bottom = Array(repeating: "d", count: 1000).joined(separator: "/")
        try writeRawTar(
            [
                RawTarEntry(name: bottom + "/keep", data: [1]), RawTarEntry(name: bottom + "/gone", data: [2]),
                RawTarEntry(name: middle + "/sibling", data: [3]), RawTarEntry(name: "top", data: [4]),
            ], to: dir + "/lower.tar")
        _ = try LayerApplier().apply(
            blobAt: dir + "/lower.tar", mediaType: tarMediaType, expectedDiffID: nil, toRoot: root)
        let upper = [
            RawTarEntry(name: bottom + "/new", data: [5]),
            RawTarEntry(name: bottom + "/.wh.new"),  // made by this layer: stays
            RawTarEntry(name: bottom + "/.wh.gone"),
            RawTarEntry(name: middle + "/.wh..wh..opq"),  // empties d^500 but for what this layer made
            RawTarEntry(name: middle + "/.wh..wh..opq"),
            RawTarEntry(name: "kept", data: [6]),
            RawTarEntry(name: ".wh..wh..opq"),
            RawTarEntry(name: ".wh..wh..opq"),
        ]
        try applyRawLayer(reversed ? upper.reversed() : upper, in: dir, root: root)
        let fm = FileManager.default
        #expect(try fm.contentsOfDirectory(atPath: root + "/" + bottom) == ["new"])
        #expect(try readFile(root + "/" + bottom + "/new") == [5])
        #expect(try fm.contentsOfDirectory(atPath: root + "/" + middle) == ["d"])
        #expect(try fm.contentsOfDirectory(atPath: root).sorted() == ["d", "kept"])
    }

    /// N whiteouts 2000 levels deep in fresh directories once cost every prefix of every path in full
    /// (about 4 MB each: a 32 KB layer of them took gigabytes and minutes). Now a path costs one small
    /// node per level, shared, and the number of them is capped.
    @Test func deepWhiteoutsInFreshDirectoriesAreCheapAndCapped() throws {
        let sandbox = try Sandbox()
        defer { removeTree(sandbox.base) }
        let deep = Array(repeating: "d", count: 2000).joined(separator: "/")
        let entries = (0..<200).map { RawTarEntry(name: "a\($0)/\(deep)/.wh.x") }
        try sandbox.apply(entries)
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.root).isEmpty)
        #expect(
            throws: LayerError.limitExceeded(
                layer: sandbox.base + "/layer.tar", limit: "more than 10000 distinct paths (entries and their parents)")
        ) {
            try sandbox.apply(entries, limits: LayerLimits(maxPaths: 10_000))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.root).isEmpty)
    }

    struct Sandbox {
        let base: String
        var root: String { base + "/root" }
        var canary: String { base + "/canary.txt" }
        init() throws {
            base = try makeTemporaryDirectory()
            try FileManager.default.createDirectory(atPath: base + "/root", withIntermediateDirectories: false)
            try Data("safe".utf8).write(to: URL(fileURLWithPath: base + "/canary.txt"))
        }
        func apply(_ entries: [RawTarEntry], limits: LayerLimits = .standard) throws {
            try writeRawTar(entries, to: base + "/layer.tar")
            _ = try LayerApplier(limits: limits).apply(
                blobAt: base + "/layer.tar", mediaType: tarMediaType, expectedDiffID: nil, toRoot: root)
        }
        func canaryIntact() throws -> Bool {
            let status = lstatOf(canary)
            return try readFile(canary) == Array("safe".utf8) && status?.st_nlink == 1
                && fileType(status) == FileTypeBits.regular
        }
    }

    static let refused: [(String, [RawTarEntry])] = [
        ("dotdot", [RawTarEntry(name: "../canary.txt", data: Array("evil".utf8))]),
        ("deep dotdot", [RawTarEntry(name: "a/../../../etc/x", data: [1])]),
        (
            "symlink parent",
            [RawTarEntry(name: "up", kind: .symlink, link: ".."), RawTarEntry(name: "up/canary.txt", data: [1])]
        ),
        (
            "symlink to /",
            [
                RawTarEntry(name: "evil", kind: .symlink, link: "/"),
                RawTarEntry(name: "evil/hermetic-escape-test", data: [1]),
            ]
        ),
        (
            "symlink to ../../..",
            [RawTarEntry(name: "s", kind: .symlink, link: "../../.."), RawTarEntry(name: "s/x/evil", data: [1])]
        ),
        ("hardlink outside", [RawTarEntry(name: "h", kind: .hardlink, link: "../canary.txt")]),
        (
            "hardlink via symlink",
            [
                RawTarEntry(name: "s", kind: .symlink, link: "../canary.txt"),
                RawTarEntry(name: "h", kind: .hardlink, link: "s"),
            ]
        ),
        (
            "hardlink through symlinked dir",
            [
                RawTarEntry(name: "s", kind: .symlink, link: ".."),
                RawTarEntry(name: "h", kind: .hardlink, link: "s/canary.txt"),
            ]
        ),
    ]

    @Test(arguments: 0..<refused.count)
    func hostileLayersAreRefused(index: Int) throws {
        let (label, entries) = Self.refused[index]
        let sandbox = try Sandbox()
        defer { removeTree(sandbox.base) }
        #expect(throws: LayerError.self, "\(label)") { try sandbox.apply(entries) }
        #expect(try sandbox.canaryIntact(), "\(label)")
        #expect(lstatOf("/hermetic-escape-test") == nil)
        #expect(lstatOf(sandbox.base + "/x") == nil)
    }

    /// `.wh...` at the top once removed the root's parent (the workspace around it), `a/.wh..` all of `a`.
    @Test(arguments: [".wh...", ".wh..", ".wh.", "a/.wh...", "a/.wh..", "a/.wh.", "./a/../.wh..."])
    func whiteoutsOfNothingOrDotOrDotDotAreRefused(name: String) throws {
        let sandbox = try Sandbox()
        defer { removeTree(sandbox.base) }
        try sandbox.apply([RawTarEntry(name: "a", kind: .directory, mode: 0o755), RawTarEntry(name: "a/x", data: [1])])
        do {
            try sandbox.apply([RawTarEntry(name: "a/y", data: [2]), RawTarEntry(name: name)])
            Issue.record("accepted \(name)")
        } catch let error as LayerError {
            let shown = RootedPath.components(name).joined(separator: "/")
            #expect(error.description.contains("entry \"\(shown)\" refused: invalid whiteout name"), "\(error)")
            #expect(error.description.contains("layer.tar"), "\(error)")
        }
        #expect(try sandbox.canaryIntact())
        #expect(try readFile(sandbox.root + "/a/x") == [1])
        #expect(try readFile(sandbox.root + "/a/y") == [2])
    }

    /// Errors name the layer as the caller says (its layout and digest), not the blob's path, which is a
    /// workspace copy gone once the build fails: refusals, libarchive failures, failed calls, diff_ids.
    @Test func errorsNameTheLayerAsGiven() throws {
        let sandbox = try Sandbox()
        defer { removeTree(sandbox.base) }
        let name = #"sha256:abc of image "base" (layout /x)"#
        func failure(_ bytes: [UInt8], root: String? = nil, diffID: Digest? = nil) -> String {
            do {
                try Data(bytes).write(to: URL(fileURLWithPath: sandbox.base + "/blob"))
                _ = try LayerApplier().apply(
                    blobAt: sandbox.base + "/blob", mediaType: tarMediaType, expectedDiffID: diffID,
                    toRoot: root ?? sandbox.root, name: name)
                return "applied"
            } catch {
                return "\(error)"
            }
        }
        try writeRawTar([RawTarEntry(name: "../x", data: [1])], to: sandbox.base + "/hostile.tar")
        let hostile = try readFile(sandbox.base + "/hostile.tar")
        let empty = [UInt8](repeating: 0, count: 1024)  // an empty tar: the end-of-archive blocks
        let cases = [
            failure(hostile), failure([UInt8](repeating: 0x41, count: 2048)),
            failure(empty, root: sandbox.base + "/missing"), failure(empty, diffID: Digest.sha256(of: [1])),
        ]
        for text in cases {
            #expect(text.hasPrefix("layer \(name): "), "\(text)")
            #expect(!text.contains(sandbox.base + "/blob"), "\(text)")
        }
        #expect(cases[0].contains(#"entry "../x" refused"#))
        #expect(cases[2].contains("open \(sandbox.base)/missing"))
        #expect(cases[3].contains("diff_id mismatch"))
    }

    @Test func refusalNamesLayerAndPath() throws {
        let sandbox = try Sandbox()
        defer { removeTree(sandbox.base) }
        do {
            try sandbox.apply([RawTarEntry(name: "../../etc/x", data: [1])])
            Issue.record("accepted")
        } catch let error as LayerError {
            #expect(error.description.contains("layer.tar") && error.description.contains("../../etc/x"))
        }
    }

    @Test func refusedNamesAreEscapedOnceOnOneLine() throws {
        let sandbox = try Sandbox()
        defer { removeTree(sandbox.base) }
        do {
            try sandbox.apply([RawTarEntry(name: "../a\\b\nc", data: [1])])
            Issue.record("accepted")
        } catch let error as LayerError {
            #expect(error.description.contains(#"entry "../a\\b\nc" refused"#), "\(error)")
            #expect(!error.description.contains("\n"))
        }
    }

    @Test func neutralizedEntriesStayInsideTheRoot() throws {
        let sandbox = try Sandbox()
        defer { removeTree(sandbox.base) }
        try sandbox.apply([
            RawTarEntry(name: "/abs/file", data: [1]),
            RawTarEntry(name: "./x/../y", data: [2]),
            RawTarEntry(name: "s", kind: .symlink, link: sandbox.canary),
            RawTarEntry(name: "s", data: Array("evil".utf8), mode: 0o600),  // replaces, never writes through
            RawTarEntry(name: "dup", data: Array("one".utf8)),
            RawTarEntry(name: "dup", data: Array("two".utf8)),
            RawTarEntry(name: "t", kind: .symlink, link: sandbox.canary),
            RawTarEntry(name: "t", kind: .directory, mode: 0o700),
        ])
        #expect(try readFile(sandbox.root + "/abs/file") == [1])
        #expect(try readFile(sandbox.root + "/y") == [2])
        #expect(try readFile(sandbox.root + "/s") == Array("evil".utf8))
        #expect(try readFile(sandbox.root + "/dup") == Array("two".utf8))
        #expect(fileType(lstatOf(sandbox.root + "/t")) == FileTypeBits.directory)
        #expect(try sandbox.canaryIntact())
        #expect(UInt32(try #require(lstatOf(sandbox.canary)).st_mode) & 0o777 == 0o644)
    }

    @Test func hugeDeclaredSizeIsRefused() throws {
        let sandbox = try Sandbox()
        defer { removeTree(sandbox.base) }
        // A ustar header declaring 8 GiB - 1 followed by no data at all.
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int) {
            for (i, byte) in text.utf8.enumerated() { header[offset + i] = byte }
        }
        put("big", at: 0)
        put("0000644", at: 100)
        put("0000000", at: 108)
        put("0000000", at: 116)
        put("77777777777", at: 124)
        put("00000000000", at: 136)
        put("        ", at: 148)
        header[156] = UInt8(ascii: "0")
        put("ustar", at: 257)
        put("00", at: 263)
        let sum = header.reduce(0) { $0 + Int($1) }
        put(String(format: "%06o", sum) + "\0 ", at: 148)
        try Data(header + [UInt8](repeating: 0, count: 1024)).write(to: URL(fileURLWithPath: sandbox.base + "/big.tar"))
        #expect(throws: (any Error).self) {
            try LayerApplier().apply(
                blobAt: sandbox.base + "/big.tar", mediaType: tarMediaType, expectedDiffID: nil, toRoot: sandbox.root)
        }
        #expect(throws: LayerError.self) {
            try LayerApplier(limits: LayerLimits(maxTotalBytes: 1 << 20)).apply(
                blobAt: sandbox.base + "/big.tar", mediaType: tarMediaType, expectedDiffID: nil, toRoot: sandbox.root)
        }
        let tooMany = (0..<20).map { RawTarEntry(name: "f\($0)") }
        #expect(throws: LayerError.limitExceeded(layer: sandbox.base + "/layer.tar", limit: "more than 10 entries")) {
            try sandbox.apply(tooMany, limits: LayerLimits(maxEntries: 10))
        }
    }

    @Test func diffIDMismatchNamesBothDigests() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        try FileManager.default.createDirectory(atPath: dir + "/root", withIntermediateDirectories: false)
        let layer = try LayerWriter(sourceDateEpoch: 0).write(
            [LayerEntry(path: "f", kind: .regular(.bytes([1])), mode: 0o644)], into: dir)
        let wrong = Digest.sha256(of: [0])
        #expect(throws: LayerError.diffIDMismatch(layer: layer.blobPath, expected: wrong, actual: layer.diffID)) {
            try LayerApplier().apply(
                blobAt: layer.blobPath, mediaType: layer.mediaType, expectedDiffID: wrong, toRoot: dir + "/root")
        }
        // Docker's media type reads the same blob; a gzip blob under the plain tar type is refused.
        #expect(
            try LayerApplier().apply(
                blobAt: layer.blobPath, mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip",
                expectedDiffID: layer.diffID, toRoot: dir + "/root") == layer.diffID)
        #expect(throws: LayerError.self) {
            try LayerApplier().apply(
                blobAt: layer.blobPath, mediaType: tarMediaType, expectedDiffID: nil, toRoot: dir + "/root")
        }
        #expect(throws: LayerError.unsupportedMediaType(layer: layer.blobPath, mediaType: "text/plain")) {
            try LayerApplier().apply(
                blobAt: layer.blobPath, mediaType: "text/plain", expectedDiffID: nil, toRoot: dir + "/root")
        }
    }
}
