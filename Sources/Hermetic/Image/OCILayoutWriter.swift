import Provenance

#if canImport(Glibc)
    import Glibc
#endif

/// Builds an OCI image layout in a staging directory beside its destination, then puts it in place whole:
/// a directory by rename, an archive as a deterministic tar renamed over the destination. A blob is stored
/// only under a digest it was hashed to have while it was written.
public final class OCILayoutWriter {
    public let stagingDirectory: String
    private var finished = false

    public enum ArchiveFormat {
        case oci
        /// Also writes a `docker save`-style `manifest.json` naming the first manifest's config and layers.
        case docker(repoTags: [String], manifest: ImageManifest)
    }

    public init(stagingParent: String) throws {
        stagingDirectory = try FileSystem.makeTemporaryDirectory(in: stagingParent, prefix: ".hermetic-layout-")
        try FileSystem.makeDirectory(stagingDirectory + "/blobs")
        try FileSystem.makeDirectory(stagingDirectory + "/blobs/sha256")
        for directory in ["", "/blobs", "/blobs/sha256"] { chmod(stagingDirectory + directory, 0o755) }
    }

    deinit {
        if !finished { FileSystem.removeTree(stagingDirectory) }
    }

    private func blobPath(_ digest: Digest) -> String { "\(stagingDirectory)/blobs/sha256/\(digest.hex)" }

    @discardableResult
    public func putBlob(_ bytes: [UInt8], mediaType: String) throws -> Descriptor {
        let digest = Digest.sha256(of: bytes)
        let path = blobPath(digest)
        if !FileSystem.exists(path) { try FileSystem.writeAtomically(bytes, to: path) }
        return Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count))
    }

    @discardableResult
    public func putCanonicalJSON<T: Encodable>(_ value: T, mediaType: String) throws -> Descriptor {
        try putBlob(try CanonicalJSON.encode(value), mediaType: mediaType)
    }

    /// Copies a file in as a blob, hashing while copying; refuses it unless it has `digest` and `size`.
    @discardableResult
    public func putBlob(copyingFile source: String, digest: Digest, size: Int64, mediaType: String) throws -> Descriptor
    {
        let path = blobPath(digest)
        if FileSystem.exists(path) { return Descriptor(mediaType: mediaType, digest: digest, size: size) }
        let temporary = path + ".partial"
        do {
            try CheckedFileCopy.copy(source, to: temporary, digest: digest, size: size, followSymlinks: true)
        } catch let refusal as CheckedFileCopy.Refusal {
            throw LayoutError(
                layout: stagingDirectory, digest: digest, reason: "refused: the file \(source) \(refusal)")
        }
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw SystemError("rename", path: path, errno: code)
        }
        return Descriptor(mediaType: mediaType, digest: digest, size: size)
    }

    private func writeMarkers(index: ImageIndex) throws {
        try FileSystem.writeAtomically(
            Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: stagingDirectory + "/oci-layout")
        try FileSystem.writeAtomically(try CanonicalJSON.encode(index), to: stagingDirectory + "/index.json")
    }

    /// Puts the layout at `destination` (a directory), replacing what was there only once it is complete.
    public func finish(index: ImageIndex, to destination: String) throws {
        let staged = try finishStaged(index: index)
        do {
            try FileSystem.replaceDirectory(at: FileSystem.absolute(destination), with: staged)
        } catch {
            FileSystem.removeTree(staged)
            throw error
        }
    }

    /// Completes the layout in its staging directory and hands that directory to the caller, who puts it
    /// in place (or removes it).
    public func finishStaged(index: ImageIndex) throws -> String {
        try writeMarkers(index: index)
        chmod(stagingDirectory, 0o755)
        finished = true
        return stagingDirectory
    }

    /// Writes the layout as one deterministic tar (sorted, mtime 0, owner 0:0, modes 0644/0755).
    ///
    /// A `docker` archive holds `manifest.json` and the first manifest's config and layers only: with an
    /// `index.json` beside it, podman takes the tar for an OCI archive and loses the names
    /// (containers/podman#10809). The archive is written under a temporary name beside `destination`, whose
    /// path is returned: the caller puts it in place (or removes it).
    public func finishArchiveStaged(index: ImageIndex, beside destination: String, format: ArchiveFormat) throws
        -> String
    {
        var entries: [LayerEntry] = [
            LayerEntry(path: "blobs", kind: .directory, mode: 0o755),
            LayerEntry(path: "blobs/sha256", kind: .directory, mode: 0o755),
        ]
        switch format {
        case .oci:
            try writeMarkers(index: index)
            entries.append(try fileEntry("index.json"))
            entries.append(try fileEntry("oci-layout"))
            guard let blobNames = FileSystem.directoryNames(stagingDirectory + "/blobs/sha256") else {
                throw SystemError("opendir", path: stagingDirectory + "/blobs/sha256", errno: errno)
            }
            for name in blobNames { entries.append(try fileEntry("blobs/sha256/" + name)) }
        case .docker(let repoTags, let manifest):
            /// One image of `docker save`'s manifest.json (Docker's capitalized keys).
            struct DockerSaveEntry: Encodable {
                var config: String
                var repoTags: [String]
                var layers: [String]
                enum CodingKeys: String, CodingKey {
                    case config = "Config"
                    case repoTags = "RepoTags"
                    case layers = "Layers"
                }
            }
            let blobs = [manifest.config.digest] + manifest.layers.map(\.digest)
            let entry = DockerSaveEntry(
                config: "blobs/sha256/\(manifest.config.digest.hex)", repoTags: repoTags,
                layers: manifest.layers.map { "blobs/sha256/\($0.digest.hex)" })
            try FileSystem.writeAtomically(try CanonicalJSON.encode([entry]), to: stagingDirectory + "/manifest.json")
            entries.append(try fileEntry("manifest.json"))
            // A layer listed twice is stored once.
            for digest in Set(blobs) { entries.append(try fileEntry("blobs/sha256/" + digest.hex)) }
        }
        let absolute = FileSystem.absolute(destination)
        let written = try LayerWriter(sourceDateEpoch: 0).writeUncompressedTar(
            entries, into: FileSystem.parentDirectory(of: absolute))
        // Like every other output: readable by all, whatever the umask.
        chmod(written.blobPath, 0o644)
        FileSystem.removeTree(stagingDirectory)
        finished = true
        return written.blobPath
    }

    private func fileEntry(_ relative: String) throws -> LayerEntry {
        var info = stat()
        let path = stagingDirectory + "/" + relative
        guard lstat(path, &info) == 0 else { throw SystemError("lstat", path: path, errno: errno) }
        return LayerEntry(path: relative, kind: .regular(.file(path: path, size: Int64(info.st_size))), mode: 0o644)
    }
}
