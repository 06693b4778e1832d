import Foundation
import Testing

@testable import Hermetic

@Suite struct ArchiveExtractorTests {
    let entries = [
        RawTarEntry(name: "./pkg/", kind: .directory, mode: 0o750, uid: 3, gid: 4, mtime: 111),
        RawTarEntry(name: "./pkg/bin/tool", data: Array("#!/bin/sh\n".utf8), mode: 0o755, uid: 5, gid: 6, mtime: 222),
        RawTarEntry(name: "pkg/link", kind: .symlink, link: "bin/tool", mode: 0o777),
        RawTarEntry(name: "pkg/hard", kind: .hardlink, link: "./pkg/bin/tool"),
        RawTarEntry(name: "pkg/dup", data: [1]),
        RawTarEntry(name: "pkg/dup", data: [2, 2]),
    ]

    @Test(arguments: [RawCompression.none, .gzip, .xz])
    func extractsEntriesWithStagedContents(compression: RawCompression) throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        let staging = dir + "/staging"
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false)
        try writeRawTar(entries, to: dir + "/a.tar", compression: compression)
        let extractor = ArchiveExtractor()
        #expect(extractor.isRecognizedArchive(at: dir + "/a.tar"))
        let result = try extractor.entries(ofArchiveAt: dir + "/a.tar", stagingDirectory: staging)
        let byPath = Dictionary(uniqueKeysWithValues: result.map { ($0.path, $0) })
        #expect(Set(byPath.keys) == ["pkg", "pkg/bin", "pkg/bin/tool", "pkg/link", "pkg/hard", "pkg/dup"])
        let pkg = try #require(byPath["pkg"])
        #expect(pkg.kind == .directory && pkg.mode == 0o750 && pkg.uid == 3 && pkg.gid == 4 && pkg.mtime == 111)
        #expect(byPath["pkg/bin"]?.mode == 0o755)  // implied parent
        let tool = try #require(byPath["pkg/bin/tool"])
        #expect(tool.mode == 0o755 && tool.uid == 5 && tool.gid == 6 && tool.mtime == 222)
        guard case .regular(.file(let staged, let size)) = tool.kind else {
            Issue.record("tool is not staged: \(tool.kind)")
            return
        }
        #expect(staged.hasPrefix(staging + "/") && size == 10)
        #expect(try readFile(staged) == Array("#!/bin/sh\n".utf8))
        #expect(byPath["pkg/link"]?.kind == .symlink(target: "bin/tool"))
        #expect(byPath["pkg/hard"]?.kind == .hardlink(target: "pkg/bin/tool"))
        if case .regular(.file(let dupPath, let dupSize)) = byPath["pkg/dup"]?.kind {
            #expect(try readFile(dupPath) == [2, 2] && dupSize == 2)
        } else {
            Issue.record("pkg/dup is not a staged file")
        }
        // The entries feed the writer directly.
        _ = try LayerWriter(sourceDateEpoch: 0).write(result, into: dir)
    }

    @Test func plainFilesAndEmptyTarsAreNotArchives() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        try Data("just text\n".utf8).write(to: URL(fileURLWithPath: dir + "/notes.txt"))
        try Data(count: 1024).write(to: URL(fileURLWithPath: dir + "/empty.tar"))
        try Data().write(to: URL(fileURLWithPath: dir + "/zero"))
        let extractor = ArchiveExtractor()
        #expect(!extractor.isRecognizedArchive(at: dir + "/notes.txt"))
        #expect(!extractor.isRecognizedArchive(at: dir + "/empty.tar"))
        #expect(!extractor.isRecognizedArchive(at: dir + "/zero"))
        #expect(!extractor.isRecognizedArchive(at: dir + "/missing"))
    }

    @Test func hostileArchivesAreRefusedAndStagingIsCleaned() throws {
        let cases: [[RawTarEntry]] = [
            [RawTarEntry(name: "ok", data: [1]), RawTarEntry(name: "../../etc/x", data: [1])],
            [RawTarEntry(name: "s", kind: .symlink, link: "/etc"), RawTarEntry(name: "s/passwd", data: [1])],
            [RawTarEntry(name: "h", kind: .hardlink, link: "../outside")],
            [RawTarEntry(name: "f", data: [1]), RawTarEntry(name: "f/child", data: [1])],
            [RawTarEntry(name: "f/child", data: [1]), RawTarEntry(name: "f", data: [1])],
            [RawTarEntry(name: "d/e/f/child", data: [1]), RawTarEntry(name: "d/e", kind: .symlink, link: "x")],
        ]
        for entries in cases {
            let dir = try makeTemporaryDirectory()
            defer { removeTree(dir) }
            try FileManager.default.createDirectory(atPath: dir + "/staging", withIntermediateDirectories: false)
            try writeRawTar(entries, to: dir + "/bad.tar")
            #expect(throws: LayerError.self) {
                try ArchiveExtractor().entries(ofArchiveAt: dir + "/bad.tar", stagingDirectory: dir + "/staging")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/staging").isEmpty)
        }
    }

    /// Deep archives: every unlisted parent is made once, whatever the depth (the parent checks walk no
    /// further up than a known parent).
    @Test func deepArchivesGetEachUnlistedParentOnce() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTree(dir) }
        try FileManager.default.createDirectory(atPath: dir + "/staging", withIntermediateDirectories: false)
        let deep = Array(repeating: "d", count: 1500).joined(separator: "/")
        let entries = (0..<50).map { RawTarEntry(name: "r\($0)/" + deep + "/f", data: [1]) }
        try writeRawTar(entries, to: dir + "/deep.tar")
        let extracted = try ArchiveExtractor().entries(
            ofArchiveAt: dir + "/deep.tar", stagingDirectory: dir + "/staging")
        #expect(extracted.count == 50 * (1 + 1500 + 1))
        #expect(Set(extracted.map(\.path)).count == extracted.count)
        #expect(extracted.filter { $0.kind == .directory }.count == 50 * 1501)
    }
}
