/// One entry of a layer, before it is written: the unit shared by COPY/ADD planning,
/// the RUN diff and the deterministic `LayerWriter`.
///
/// `path` is relative to the image root, normalized: no leading `/` or `./`, no `.` or `..`
/// components, no empty components, no trailing `/` (e.g. `usr/bin/env`). Whiteouts are plain
/// entries named `.wh.<name>` / `.wh..wh..opq` (OCI image-spec layer rules).
public struct LayerEntry: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case directory
        case regular(ContentSource)
        case symlink(target: String)
        /// `target` is another entry's normalized path in the same layer or a lower one.
        case hardlink(target: String)
        case characterDevice(major: UInt32, minor: UInt32)
        case blockDevice(major: UInt32, minor: UInt32)
        case fifo
    }

    public var path: String
    public var kind: Kind
    /// Permission bits including setuid, setgid and sticky (`0o7777` mask).
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// Seconds since the epoch; the writer clamps it to SOURCE_DATE_EPOCH.
    public var mtime: Int64
    /// Extended attributes, written as PAX `SCHILY.xattr.*` records (sorted by name).
    public var xattrs: [String: [UInt8]]

    public init(
        path: String, kind: Kind, mode: UInt32, uid: UInt32 = 0, gid: UInt32 = 0,
        mtime: Int64 = 0, xattrs: [String: [UInt8]] = [:]
    ) {
        self.path = path
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.xattrs = xattrs
    }
}

/// Where a regular file's bytes come from when the layer is written.
public enum ContentSource: Sendable, Hashable {
    /// A file on the host, read when the layer is written; `size` is checked then.
    case file(path: String, size: Int64)
    /// Bytes held in memory (heredocs, generated files).
    case bytes([UInt8])

    public var size: Int64 {
        switch self {
        case .file(_, let size): return size
        case .bytes(let bytes): return Int64(bytes.count)
        }
    }
}
