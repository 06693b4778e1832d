import Foundation
import Testing

@testable import Hermetic

/// The parents `EntryCollector` adds to a COPY's entries: existing directories with their attributes,
/// missing ones as 0755 with the owner and SOURCE_DATE_EPOCH, each once, however deep the tree.
@Suite struct EntryCollectorTests {
    /// `COPY . /` of a context that is one chain 1500 directories deep lists every level. Finishing once
    /// walked every ancestor of every entry, joining each path again: cubic in depth (this took minutes).
    @Test func everyParentOnceForADeepChain() throws {
        let root = try makeTemporaryDirectory()
        defer { removeTree(root) }
        try FileManager.default.createDirectory(atPath: root + "/dest/sub", withIntermediateDirectories: true)
        chmod(root + "/dest", 0o700)
        chmod(root + "/dest/sub", 0o750)
        var collector = EntryCollector(root: root, epoch: 1234, owner: (uid: 7, gid: 8))
        let depth = 1500
        var path = "dest/sub"
        for _ in 0..<depth {
            path += "/d"
            collector.add(LayerEntry(path: path, kind: .directory, mode: 0o711, mtime: 5))
        }
        collector.add(LayerEntry(path: path + "/f", kind: .regular(.bytes([1])), mode: 0o644))
        // A branch whose parents are not listed and do not exist in the destination.
        collector.add(LayerEntry(path: "dest/sub/x/y/z/g", kind: .regular(.bytes([2])), mode: 0o644))
        let entries = try collector.finish()

        let byPath = Dictionary(uniqueKeysWithValues: entries.map { ($0.path, $0) })
        #expect(entries.count == byPath.count)
        #expect(entries.count == depth + 1 + 2 + 1 + 3)
        #expect(entries.map(\.path) == entries.map(\.path).sorted())
        // Each entry's parent is there, so (by induction) all its ancestors are.
        for entry in entries {
            guard let slash = entry.path.lastIndex(of: "/") else { continue }
            #expect(byPath[String(entry.path[..<slash])] != nil, "missing the parent of \(entry.path)")
        }
        let existing = try #require(byPath["dest/sub"])
        #expect(existing.kind == .directory && existing.mode == 0o750 && existing.uid == 0 && existing.mtime != 1234)
        #expect(byPath["dest"]?.mode == 0o700)
        let missing = try #require(byPath["dest/sub/x/y"])
        #expect(missing.kind == .directory && missing.mode == 0o755 && missing.uid == 7 && missing.gid == 8)
        #expect(missing.mtime == 1234)
        // Listed levels are kept as given, never replaced by a made-up parent.
        #expect(byPath["dest/sub/d/d"]?.mode == 0o711 && byPath["dest/sub/d/d"]?.mtime == 5)
    }
}
