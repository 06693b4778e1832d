#if canImport(Glibc)
    import Glibc
#endif

/// The layer entries one COPY or ADD adds to a stage (BuildKit's semantics):
/// - a directory source copies its contents, not itself; a file goes into `dest/` or becomes `dest`;
/// - several sources (or a wildcard matching several) need a destination that is a directory;
/// - relative destinations are relative to WORKDIR; symlinks in the destination resolve inside the root;
/// - owners: build-context files 0:0, files from a stage or image keep theirs, `--chown` overrides;
/// - `--chmod` (octal or symbolic, `FileModeChange`) applies to every copied file and directory;
/// - missing parent directories are created (0755, owned by the `--chown` owner or root), and existing
///   parents are repeated with their current attributes so the layer stands alone;
/// - hardlinks inside the copied set stay hardlinks, symlinks stay symlinks;
/// - `ADD` of a local tar archive (any compression libarchive reads) extracts it into the destination;
///   a remote file (already fetched and checked) is written with mode 0600.
struct CopyPlanner {
    var sourceContext: BuildContext
    var destinationRoot: String
    var workingDirectory: String
    var sourceDateEpoch: Int64
    var stagingDirectory: String
    /// Remote sources already fetched and verified: URL → staged file.
    var remoteFiles: [String: (path: String, size: Int64)] = [:]

    struct PlanError: HermeticError {
        var message: String
        var description: String { message }
    }

    func entries(for copy: CopyInstruction, owner: (uid: UInt32, gid: UInt32)?, line: Int, file: String) throws
        -> [LayerEntry]
    {
        do {
            return try plannedEntries(for: copy, owner: owner, line: line, file: file)
        } catch let error as BuildContext.SourceError {
            // Found while walking the source (a name that is not UTF-8…): the instruction's error.
            throw DockerfileError(file: file, line: line, message: "\(copy.isAdd ? "ADD" : "COPY") failed: \(error)")
        } catch let error as RootedPath.ResolutionError {
            throw DockerfileError(file: file, line: line, message: "\(copy.isAdd ? "ADD" : "COPY") failed: \(error)")
        } catch let error as PlanError {
            throw DockerfileError(file: file, line: line, message: "\(copy.isAdd ? "ADD" : "COPY") failed: \(error)")
        }
    }

    private func plannedEntries(
        for copy: CopyInstruction, owner: (uid: UInt32, gid: UInt32)?, line: Int, file: String
    ) throws -> [LayerEntry] {
        let site = InstructionSite(file: file, line: line, keyword: copy.isAdd ? "ADD" : "COPY")
        let mode = try fileModeChange(copy.chmod, site: site)
        let excludes: DockerIgnore
        do {
            excludes = try DockerIgnore(text: copy.excludes.joined(separator: "\n"), file: "\(file):\(line) --exclude")
        } catch {
            throw site.fail("\(site.keyword) --exclude: \(error)")
        }
        let destination = try resolveDestination(copy.destination, site: site)
        let items = try sourceItems(of: copy, site: site)
        let many = items.count > 1
        if copy.sources.count > 1 && !destination.endsWithSlash && !destination.existsAsDirectory {
            throw site.fail(
                "When using \(site.keyword) with more than one source file, the destination must be a directory and end with a /"
            )
        }
        let request = CopyRequest(
            copy: copy, owner: owner, mode: mode, excludes: excludes, destination: destination,
            intoDirectory: destination.endsWithSlash || destination.existsAsDirectory || many || copy.parents,
            site: site)
        var collector = EntryCollector(root: destinationRoot, epoch: sourceDateEpoch, owner: owner, chmod: mode)
        for item in items { try add(item, of: request, to: &collector) }
        return try collector.finish()
    }

    /// The `--chmod` value; BuildKit: an empty --chmod is no chmod; its texts for the two kinds of bad value.
    private func fileModeChange(_ chmod: String?, site: InstructionSite) throws -> FileModeChange? {
        guard let chmod, !chmod.isEmpty else { return nil }
        do {
            return try FileModeChange.parse(chmod)
        } catch .notOctal {
            throw site.fail(
                "\(site.keyword) --chmod=\(chmod): invalid chmod parameter: '\(chmod)'. it should be octal string and between 0 and 07777"
            )
        } catch {
            throw site.fail("\(site.keyword) --chmod=\(chmod): invalid syntax")
        }
    }

    /// Where things go: the destination as written, relative to WORKDIR, its symlinks resolved inside the root.
    private func resolveDestination(_ destinationText: String, site: InstructionSite) throws -> Destination {
        let absoluteDestination =
            destinationText.hasPrefix("/") ? destinationText : workingDirectory + "/" + destinationText
        let resolvedDestination: [String]
        do {
            resolvedDestination = try RootedPath.resolve(absoluteDestination, inRoot: destinationRoot)
        } catch {
            throw site.fail("\(site.keyword) destination \(destinationText): \(error)")
        }
        let destinationExistsAsDirectory =
            RootedPath.status(resolvedDestination, inRoot: destinationRoot)
            .map { ($0.st_mode & S_IFMT) == S_IFDIR } ?? false
        let endsWithSlash = destinationText.hasSuffix("/") || destinationText.hasSuffix("/.") || destinationText == "."
        return Destination(
            components: resolvedDestination, existsAsDirectory: destinationExistsAsDirectory,
            endsWithSlash: endsWithSlash)
    }

    /// What is copied: each source's heredoc, fetched remote file or matches in the source tree, in order.
    private func sourceItems(of copy: CopyInstruction, site: InstructionSite) throws -> [SourceItem] {
        var items: [SourceItem] = []
        let heredocsByName = Dictionary(copy.heredocs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for source in copy.sources {
            if let heredoc = heredocsByName[source] {
                items.append(SourceItem(heredoc: heredoc, nameForDirectory: heredoc.name, parentsPrefix: []))
                continue
            }
            if InstructionBuilder.isRemote(source) {
                guard let fetched = remoteFiles[source] else { throw site.fail("ADD \(source): not fetched") }
                items.append(
                    SourceItem(
                        remote: (source, fetched.path, fetched.size),
                        nameForDirectory: RemoteFileFetcher.fileName(of: source), parentsPrefix: []))
                continue
            }
            let matches: [BuildContext.Match]
            do {
                matches = try sourceContext.resolve(source)
            } catch {
                throw site.fail("\(site.keyword) failed: \(error)")
            }
            // `--parents` keeps each match's parent directories, from the first `/./` on when the source has
            // one (BuildKit's pivot: `a/./b/c` lands as `b/c`).
            let pivot =
                copy.parents
                ? source.range(of: "/./").map { RootedPath.components(String(source[..<$0.lowerBound])) } : nil
            for match in matches {
                let name = match.name
                var prefix = copy.parents ? Array(match.components.dropLast()) : []
                if let pivot, prefix.starts(with: pivot) { prefix.removeFirst(pivot.count) }
                items.append(SourceItem(match: match, nameForDirectory: name, parentsPrefix: prefix))
            }
        }
        return items
    }

    /// The entries of one source item.
    private func add(_ item: SourceItem, of request: CopyRequest, to collector: inout EntryCollector) throws {
        let (copy, owner, mode) = (request.copy, request.owner, request.mode)
        let base = request.destination.components + item.parentsPrefix
        let target = request.intoDirectory ? base + [item.nameForDirectory] : request.destination.components
        if let heredoc = item.heredoc {
            collector.add(
                LayerEntry(
                    path: target.joined(separator: "/"), kind: .regular(.bytes(Array(heredoc.content.utf8))),
                    mode: mode?.apply(to: 0o644, isDirectory: false) ?? 0o644, uid: owner?.uid ?? 0,
                    gid: owner?.gid ?? 0, mtime: sourceDateEpoch))
            return
        }
        if let remote = item.remote {
            collector.add(
                LayerEntry(
                    path: target.joined(separator: "/"),
                    kind: .regular(.file(path: remote.path, size: remote.size)),
                    mode: mode?.apply(to: 0o600, isDirectory: false) ?? 0o600,
                    uid: owner?.uid ?? 0, gid: owner?.gid ?? 0, mtime: sourceDateEpoch))
            return
        }
        guard let match = item.match else { return }
        var info = match.info
        var hostPath = match.hostPath
        // A symlink named as the source itself is followed (inside the tree), as BuildKit does.
        if (info.st_mode & S_IFMT) == S_IFLNK {
            let followed = try RootedPath.resolve(match.components.joined(separator: "/"), inRoot: sourceContext.root)
            guard let followedInfo = RootedPath.status(followed, inRoot: sourceContext.root) else {
                throw request.site.fail(
                    "\(request.site.keyword) failed: \"\(match.components.joined(separator: "/"))\" is a dangling symlink"
                )
            }
            info = followedInfo
            hostPath = sourceContext.host(followed)
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            let directoryTarget = copy.parents ? base + [item.nameForDirectory] : request.destination.components
            try addDirectory(match, info: info, hostPath: hostPath, at: directoryTarget, of: request, to: &collector)
            return
        }
        guard !target.isEmpty else { throw request.site.fail("\(request.site.keyword): cannot copy a file onto /") }
        if copy.isAdd, sourceContext.isBuildContext, copy.unpack != false, (info.st_mode & S_IFMT) == S_IFREG,
            ArchiveExtractor().isRecognizedArchive(at: hostPath)
        {
            let archiveTarget =
                request.intoDirectory || request.destination.endsWithSlash ? base : request.destination.components
            try addArchive(at: hostPath, into: archiveTarget, owner: owner, to: &collector)
            return
        }
        collector.add(try entry(for: info, at: target, hostPath: hostPath, mode: mode, owner: owner))
    }

    /// A directory source: its contents, not itself, less `--exclude`d paths; hardlinks among them stay so.
    private func addDirectory(
        _ match: BuildContext.Match, info: stat, hostPath: String, at target: [String], of request: CopyRequest,
        to collector: inout EntryCollector
    ) throws {
        let (owner, mode) = (request.owner, request.mode)
        let directoryComponents = try RootedPath.resolve(
            match.components.joined(separator: "/"), inRoot: sourceContext.root)
        if !target.isEmpty, RootedPath.status(target, inRoot: destinationRoot) == nil {
            // Only the contents are copied: BuildKit creates the directory itself as root (or the
            // --chown owner), not as the source directory's owner (testCopyChownExistingDir).
            collector.add(try entry(for: info, at: target, hostPath: hostPath, mode: mode, owner: owner ?? (0, 0)))
        }
        var firstByInode: [String: String] = [:]
        for (relative, childInfo) in try sourceContext.walk(directoryComponents) {
            let relativePath = relative.joined(separator: "/")
            if !request.excludes.isEmpty, request.excludes.isExcluded(relativePath) { continue }
            let childTarget = target + relative
            let childHost = sourceContext.host(directoryComponents + relative)
            var childEntry = try entry(for: childInfo, at: childTarget, hostPath: childHost, mode: mode, owner: owner)
            if (childInfo.st_mode & S_IFMT) == S_IFREG, childInfo.st_nlink > 1 {
                let inode = "\(childInfo.st_dev):\(childInfo.st_ino)"
                if let first = firstByInode[inode] {
                    childEntry.kind = .hardlink(target: first)
                } else {
                    firstByInode[inode] = childEntry.path
                }
            }
            collector.add(childEntry)
        }
    }

    /// `ADD` of a local archive: its entries, extracted into the staging directory, under the target.
    private func addArchive(
        at hostPath: String, into target: [String], owner: (uid: UInt32, gid: UInt32)?,
        to collector: inout EntryCollector
    ) throws {
        let staging = try FileSystem.makeTemporaryDirectory(in: stagingDirectory, prefix: "archive-")
        for var extracted in try ArchiveExtractor().entries(ofArchiveAt: hostPath, stagingDirectory: staging) {
            extracted.path = (target + RootedPath.components(extracted.path)).joined(separator: "/")
            if let owner {
                extracted.uid = owner.uid
                extracted.gid = owner.gid
            }
            collector.add(extracted)
        }
    }

    /// One entry for a file found in the source tree.
    private func entry(
        for info: stat, at target: [String], hostPath: String, mode: FileModeChange?, owner: (uid: UInt32, gid: UInt32)?
    ) throws -> LayerEntry {
        let fromContext = sourceContext.isBuildContext
        var entry = LayerEntry(
            path: target.joined(separator: "/"), kind: .directory,
            mode: mode?.apply(to: UInt32(info.st_mode) & 0o7777, isDirectory: (info.st_mode & S_IFMT) == S_IFDIR)
                ?? (UInt32(info.st_mode) & 0o7777),
            uid: owner?.uid ?? (fromContext ? 0 : info.st_uid), gid: owner?.gid ?? (fromContext ? 0 : info.st_gid),
            mtime: fromContext ? sourceDateEpoch : Int64(info.st_mtim.tv_sec))
        switch info.st_mode & S_IFMT {
        case S_IFDIR: entry.kind = .directory
        case S_IFLNK:
            entry.kind = .symlink(target: try RootedPath.readLink(hostPath))
            entry.mode = 0o777
        case S_IFIFO: entry.kind = .fifo
        // A socket cannot be in a layer: BuildKit's copy makes it an empty regular file (testCopySocket).
        case S_IFSOCK: entry.kind = .regular(.bytes([]))
        case S_IFCHR:
            entry.kind = .characterDevice(
                major: FileSystem.deviceMajor(info.st_rdev), minor: FileSystem.deviceMinor(info.st_rdev))
        case S_IFBLK:
            entry.kind = .blockDevice(
                major: FileSystem.deviceMajor(info.st_rdev), minor: FileSystem.deviceMinor(info.st_rdev))
        default: entry.kind = .regular(.file(path: hostPath, size: Int64(info.st_size)))
        }
        return entry
    }

    /// The instruction being planned, for its error messages.
    private struct InstructionSite {
        let file: String
        let line: Int
        /// `COPY` or `ADD`.
        let keyword: String

        func fail(_ message: String) -> DockerfileError { DockerfileError(file: file, line: line, message: message) }
    }

    /// The destination resolved inside the root, and what decides whether sources go into it.
    private struct Destination {
        let components: [String]
        let existsAsDirectory: Bool
        /// Written as a directory (`dir/`, `dir/.`, `.`).
        let endsWithSlash: Bool
    }

    /// One thing to copy: a heredoc, a fetched remote file or a match in the source tree.
    private struct SourceItem {
        var match: BuildContext.Match?
        var heredoc: Heredoc?
        var remote: (url: String, path: String, size: Int64)?
        var nameForDirectory: String
        var parentsPrefix: [String]
    }

    /// One COPY or ADD with its flags parsed and its destination resolved.
    private struct CopyRequest {
        let copy: CopyInstruction
        let owner: (uid: UInt32, gid: UInt32)?
        let mode: FileModeChange?
        let excludes: DockerIgnore
        let destination: Destination
        /// Whether each source lands inside the destination under its own name, rather than as it.
        let intoDirectory: Bool
        let site: InstructionSite
    }
}

/// Collects entries by path (a later one replaces an earlier one, as a later copy overwrites) and adds
/// every parent directory: existing ones with their current attributes, missing ones as 0755; a parent
/// that exists as something else than a directory (or a symlink) is an error.
struct EntryCollector {
    let root: String
    let epoch: Int64
    let owner: (uid: UInt32, gid: UInt32)?
    /// `--chmod`, which BuildKit's copy also gives the parent directories it creates (testCopyChmod).
    let chmod: FileModeChange?
    private var entries: [String: LayerEntry] = [:]

    init(root: String, epoch: Int64, owner: (uid: UInt32, gid: UInt32)?, chmod: FileModeChange? = nil) {
        self.root = root
        self.epoch = epoch
        self.owner = owner
        self.chmod = chmod
    }

    mutating func add(_ entry: LayerEntry) {
        entries[entry.path] = entry
    }

    /// Adds the missing parents of every entry. Each parent is looked at once: the walk up from an entry
    /// stops at the first parent already known, whose own parents are (or will be) handled from it. Walking
    /// every ancestor of every entry, re-joining each path, was cubic in depth for a deep tree.
    func finish() throws -> [LayerEntry] {
        var all = entries
        for path in entries.keys {
            var parent = Substring(path)
            while let slash = parent.lastIndex(of: "/") {
                parent = parent[..<slash]
                let key = String(parent)
                guard all[key] == nil else { break }
                let components = parent.split(separator: "/").map(String.init)
                let existing = RootedPath.status(components, inRoot: root)
                if let info = existing, ![S_IFDIR, S_IFLNK].contains(info.st_mode & S_IFMT) {
                    // BuildKit's copy fails its MkdirAll here; a file is never turned into a directory.
                    throw CopyPlanner.PlanError(message: "mkdir /\(key): not a directory")
                }
                if let info = existing, (info.st_mode & S_IFMT) == S_IFDIR {
                    all[key] = LayerEntry(
                        path: key, kind: .directory, mode: UInt32(info.st_mode) & 0o7777,
                        uid: info.st_uid, gid: info.st_gid, mtime: Int64(info.st_mtim.tv_sec))
                } else {
                    all[key] = LayerEntry(
                        path: key, kind: .directory, mode: chmod?.apply(to: 0o755, isDirectory: true) ?? 0o755,
                        uid: owner?.uid ?? 0, gid: owner?.gid ?? 0, mtime: epoch)
                }
            }
        }
        return all.values.sorted { $0.path < $1.path }
    }
}
