import Sandbox

#if canImport(Glibc)
    import Glibc
#endif

/// A parsed `RUN --mount=…` value (BuildKit's CSV form: `type=cache,target=/x,id=y`).
enum RunMount: Equatable {
    case bind(target: String, source: String, from: String?, readWrite: Bool)
    case cache(
        target: String, id: String, sharing: String, from: String?, source: String?, mode: UInt32?, uid: UInt32?,
        gid: UInt32?)
    case tmpfs(target: String, sizeBytes: Int)
    case secret(id: String, target: String?, env: String?, required: Bool, mode: UInt32, uid: UInt32, gid: UInt32)
    case ssh(id: String, target: String?, required: Bool)

    struct ParseError: Error, CustomStringConvertible {
        var description: String
    }

    /// Whether the `from=` field of a `--mount` value as written holds a `$` before its last character:
    /// BuildKit's parseMount refuses that before anything is expanded.
    static func rawFromUsesVariable(_ text: String) -> Bool {
        for field in text.split(separator: ",") {
            guard let eq = field.firstIndex(of: "="), field[..<eq].lowercased() == "from" else { continue }
            let value = field[field.index(after: eq)...]
            if let dollar = value.firstIndex(of: "$"), value.index(after: dollar) != value.endIndex { return true }
        }
        return false
    }

    static func parse(_ text: String) throws -> RunMount {
        var fields: [String: String] = [:]
        var flags = Set<String>()
        for part in text.split(separator: ",", omittingEmptySubsequences: true) {
            if let eq = part.firstIndex(of: "=") {
                let key = part[..<eq].lowercased()
                guard fields[key] == nil else { throw ParseError(description: "--mount \(key) given twice") }
                fields[key] = String(part[part.index(after: eq)...])
            } else {
                flags.insert(part.lowercased())
            }
        }
        func bool(_ key: String) throws -> Bool {
            if flags.contains(key) { return true }
            guard let value = fields[key] else { return false }
            guard value == "true" || value == "false" else {
                throw ParseError(description: "--mount \(key)=\(value): expected true or false")
            }
            return value == "true"
        }
        func octal(_ key: String) throws -> UInt32? {
            guard let value = fields[key] else { return nil }
            guard let mode = UInt32(value, radix: 8), mode <= 0o7777 else {
                throw ParseError(description: "--mount \(key)=\(value): expected an octal mode")
            }
            return mode
        }
        func number(_ key: String) throws -> UInt32? {
            guard let value = fields[key] else { return nil }
            guard let id = UInt32(value) else {
                throw ParseError(description: "--mount \(key)=\(value): expected a number")
            }
            return id
        }
        let target = fields["target"] ?? fields["dst"] ?? fields["destination"]
        let type = fields["type"] ?? "bind"
        let known: [String: Set<String>] = [
            "bind": [
                "type", "target", "dst", "destination", "source", "src", "from", "rw", "readwrite", "ro", "readonly",
            ],
            "cache": [
                "type", "target", "dst", "destination", "id", "sharing", "from", "source", "src", "mode", "uid", "gid",
                "ro", "readonly",
            ],
            "tmpfs": ["type", "target", "dst", "destination", "size"],
            "secret": ["type", "id", "target", "dst", "destination", "env", "required", "mode", "uid", "gid"],
            "ssh": ["type", "id", "target", "dst", "destination", "required", "mode", "uid", "gid"],
        ]
        guard let allowed = known[type] else {
            throw ParseError(description: "--mount type=\(type): expected bind, cache, tmpfs, secret or ssh")
        }
        if let unknown = (Set(fields.keys).union(flags)).subtracting(allowed).sorted().first {
            throw ParseError(description: "--mount type=\(type): unknown option \"\(unknown)\"")
        }
        // BuildKit's dispatchRunMounts joins a bind, cache or tmpfs target to the working directory, so a
        // missing target is the working directory itself (`RUN --mount=from=binary ls`).
        func requireTarget() -> String { target ?? "" }
        switch type {
        case "bind":
            return .bind(
                target: requireTarget(), source: fields["source"] ?? fields["src"] ?? "/", from: fields["from"],
                readWrite: try bool("rw") || bool("readwrite"))
        case "cache":
            let target = requireTarget()
            let sharing = fields["sharing"] ?? "shared"
            guard ["shared", "private", "locked"].contains(sharing) else {
                throw ParseError(description: "--mount sharing=\(sharing): expected shared, private or locked")
            }
            return .cache(
                target: target, id: fields["id"] ?? cleanPath(target), sharing: sharing, from: fields["from"],
                source: fields["source"] ?? fields["src"], mode: try octal("mode"), uid: try number("uid"),
                gid: try number("gid"))
        case "tmpfs":
            var size = 64 << 20
            if let text = fields["size"] {
                guard let parsed = ByteSize.parse(text) else {
                    throw ParseError(description: "--mount size=\(text): not a size")
                }
                size = parsed
            }
            return .tmpfs(target: requireTarget(), sizeBytes: size)
        case "secret":
            let id = fields["id"] ?? target.map { String($0.split(separator: "/").last ?? "") } ?? ""
            guard !id.isEmpty else { throw ParseError(description: "--mount type=secret needs id= or target=") }
            return .secret(
                id: id, target: target, env: fields["env"], required: try bool("required"),
                mode: try octal("mode") ?? 0o400, uid: try number("uid") ?? 0, gid: try number("gid") ?? 0)
        default:
            return .ssh(id: fields["id"] ?? "default", target: target, required: try bool("required"))
        }
    }
}

extension RunMount {
    /// Where a bind, cache or tmpfs mount lands: its target joined to the step's working directory, as
    /// BuildKit's dispatchRunMounts does; a result of `/` is refused with BuildKit's words.
    static func mountPoint(_ target: String, workingDirectory: String) throws -> String {
        let joined = cleanPath(target.hasPrefix("/") ? target : workingDirectory + "/" + target)
        guard joined != "/" else { throw ParseError(description: "invalid mount target \"/\"") }
        return joined
    }

    /// Go's path.Clean: `.` and `..` resolved lexically, slashes collapsed, `.` for an empty path (BuildKit
    /// names a cache mount without id= by its cleaned target, so `--mount=type=cache` alone is id `.`).
    static func cleanPath(_ path: String) -> String {
        let rooted = path.hasPrefix("/")
        var parts: [Substring] = []
        for part in path.split(separator: "/") where part != "." {
            if part == ".." {
                if let last = parts.last, last != ".." {
                    parts.removeLast()
                } else if !rooted {
                    parts.append(part)
                }
                continue
            }
            parts.append(part)
        }
        let joined = parts.joined(separator: "/")
        if rooted { return "/" + joined }
        return joined.isEmpty ? "." : joined
    }
}

/// `64m`, `1g`, `4096`, `512k` → bytes.
enum ByteSize {
    static func parse(_ text: String) -> Int? {
        let lower = text.lowercased()
        let units: [(String, Int)] = [
            ("kb", 1 << 10), ("mb", 1 << 20), ("gb", 1 << 30), ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("b", 1),
        ]
        for (suffix, factor) in units where lower.hasSuffix(suffix) {
            guard let value = Int(lower.dropLast(suffix.count)), value >= 0, value <= Int.max / factor else {
                return nil
            }
            return value * factor
        }
        return Int(lower).flatMap { $0 >= 0 ? $0 : nil }
    }
}

/// A cache mount's directory held for one RUN step, with BuildKit's `sharing` modes across builds and
/// processes (solver/llbsolver/mounts: a cache id may have several directories, each free or in use).
/// Directory `N` of an id is `BASE/HEX` (N = 0) or `BASE/HEX-N`, HEX the sha256 of the id (so no id can
/// name a path outside BASE), its lock file the same name plus `.lock`:
/// - `shared`: the first directory no `locked`/`private` step holds, used together with other `shared`
///   steps (a shared `flock`); a new one when every one is held.
/// - `private`: the first directory no other step uses (an exclusive `flock` got without waiting); a new
///   one when every one is in use.
/// - `locked`: directory 0, waiting (an exclusive `flock`) until no other step uses it.
/// The lock is held until the step ends (`release`), or until the builder dies.
struct CacheMountHold {
    var id: String
    var directory: String
    private var lock: Int32

    func release() { close(lock) }

    /// The most directories one cache id gets (private steps at once).
    static let maximumDirectories = 256

    static func acquire(
        base: String, id: String, sharing: String, mode: UInt32?, uid: UInt32?, gid: UInt32?,
        waiting: () -> Void
    ) throws -> CacheMountHold {
        try FileSystem.makeDirectories(base, mode: 0o700)
        let name = base + "/" + Digest.sha256(of: Array(id.utf8)).hex
        for index in 0..<maximumDirectories {
            let directory = index == 0 ? name : name + "-\(index)"
            let lockFile = directory + ".lock"
            let fd = open(lockFile, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw SystemError("create the lock file", path: lockFile, errno: errno) }
            var operation = sharing == "shared" ? LOCK_SH : LOCK_EX
            if sharing != "locked" { operation |= LOCK_NB }
            if sharing == "locked", flock(fd, LOCK_EX | LOCK_NB) != 0 { waiting() }
            var locked = false
            while true {
                if flock(fd, operation) == 0 {
                    locked = true
                    break
                }
                guard errno == EINTR else { break }
            }
            guard locked else {
                let code = errno
                close(fd)
                guard code == EWOULDBLOCK else { throw SystemError("lock", path: lockFile, errno: code) }
                continue
            }
            do {
                if !FileSystem.exists(directory) {
                    try FileSystem.makeDirectory(directory)
                    chmod(directory, mode_t(mode ?? 0o755))
                    chown(directory, uid ?? 0, gid ?? 0)
                }
            } catch {
                close(fd)
                throw error
            }
            return CacheMountHold(id: id, directory: directory, lock: fd)
        }
        throw SystemError("find a free directory for cache mount \(id) in", path: base, errno: EBUSY)
    }
}

// MARK: A RUN step's mounts

/// A RUN step's `--mount` flags made into the sandbox's extra mounts: tmpfs, bind (the context, a stage,
/// an image or a directory), cache, secret and ssh.
extension StageExecutor {
    /// What a step's `--mount` flags build up: the extra mounts, the environment they change (secrets as
    /// variables, SSH_AUTH_SOCK), the provenance record, and the cache mounts held until the step ends.
    struct StepMounts {
        var mounts: [ExtraMount] = []
        var environment: [String]
        /// The names the step's environment sets before any mount: an ssh mount sets SSH_AUTH_SOCK only
        /// when it is not among them.
        let names: Set<String>
        let workingDirectory: String
        var record: RunRecord
        var cacheHolds: [CacheMountHold] = []
    }

    /// Adds each `--mount` of the step, in order, to `setup`.
    mutating func addMounts(
        _ run: RunInstruction, position: Int?, scope: StageScope, line: Int, to setup: inout StepMounts
    ) throws {
        for (mountIndex, text) in run.mounts.enumerated() {
            let expandedText: String
            do {
                expandedText = try lexer.processWord(text, lookup: { scope.lookup($0) })
            } catch {
                throw stepError(line: line, "RUN --mount=\(text): \(error)")
            }
            let mount: RunMount
            do {
                mount = try RunMount.parse(expandedText)
            } catch {
                throw stepError(line: line, "RUN \(error)")
            }
            // The planner's key for this mount's `from` (a stage, an image or a named context).
            let key = position.map { "\($0):\(mountIndex)" }
            switch mount {
            case .tmpfs(let target, let size):
                setup.mounts.append(
                    ExtraMount(
                        .tmpfs(sizeBytes: size),
                        target: try mountPoint(target, setup.workingDirectory, text, line: line)))
            case .bind(let target, let source, let from, let readWrite):
                let point = try mountPoint(target, setup.workingDirectory, text, line: line)
                let root = try mountSourceRoot(from: from, key: key, line: line)
                let materialized = try materializeBindSource(
                    root: root, source: source, readWrite: readWrite,
                    fromContext: from == nil, line: line)
                setup.mounts.append(
                    ExtraMount(
                        readWrite ? .bind(source: materialized) : .bindReadOnly(source: materialized),
                        target: point))
            case .cache(let target, let id, let sharing, _, _, let mode, let cacheUID, let cacheGID):
                let point = try mountPoint(target, setup.workingDirectory, text, line: line)
                try addCacheMount(
                    id: id, at: point, sharing: sharing, mode: mode, uid: cacheUID, gid: cacheGID, line: line,
                    to: &setup)
            case .secret(let id, let target, let env, let required, let mode, let secretUID, let secretGID):
                try addSecretMount(
                    id: id, target: target, env: env, required: required, mode: mode, uid: secretUID,
                    gid: secretGID, line: line, to: &setup)
            case .ssh(let id, let target, let required):
                try addSSHMount(id: id, target: target, required: required, line: line, to: &setup)
            }
        }
    }

    /// A cache mount: its directory in the state directory, held (sharing mode's lock) until the step ends.
    private func addCacheMount(
        id: String, at point: String, sharing: String, mode: UInt32?, uid: UInt32?, gid: UInt32?, line: Int,
        to setup: inout StepMounts
    ) throws {
        // One id twice in a step is one directory (a second lock would wait for the first).
        let hold =
            try setup.cacheHolds.first { $0.id == id }
            ?? CacheMountHold.acquire(
                base: runOptions.stateDirectory + "/cache", id: id, sharing: sharing, mode: mode,
                uid: uid, gid: gid,
                waiting: {
                    log.warning(
                        "Dockerfile:\(line): waiting for cache mount \(id) (sharing=locked), which another step uses"
                    )
                })
        if !setup.cacheHolds.contains(where: { $0.id == id }) { setup.cacheHolds.append(hold) }
        let directory = hold.directory
        setup.record.cacheMounts.append((id, !(FileSystem.directoryByteNames(directory) ?? []).isEmpty))
        setup.mounts.append(
            ExtraMount(.bind(source: directory), target: point))
    }

    /// A secret mount: a file (read-only, in the workspace), an environment variable, or both. A secret
    /// not given is skipped unless required.
    private mutating func addSecretMount(
        id: String, target: String?, env: String?, required: Bool, mode: UInt32, uid: UInt32, gid: UInt32,
        line: Int, to setup: inout StepMounts
    ) throws {
        setup.record.requested.append(("secret", id, required))
        guard
            let source = try given(
                runOptions.secrets[id], required: required, line: line,
                "secret \(id) is required but was not given (hermetic build --secret id=\(id),src=…)")
        else { return }
        setup.record.secretIDs.append(id)
        let value = try secretValue(id: id, source: source, line: line)
        if let env {
            setup.environment.removeAll { $0.hasPrefix(env + "=") }
            setup.environment.append(env + "=" + String(decoding: value, as: UTF8.self))
        }
        if target != nil || env == nil {
            let secretFile = try writeSecret(value, id: id, mode: mode, uid: uid, gid: gid)
            setup.mounts.append(
                ExtraMount(
                    .bindReadOnly(source: secretFile),
                    target: absolute(target ?? "/run/secrets/\(id)", setup.workingDirectory)))
        }
    }

    /// An ssh mount: the agent's socket bound in, named by SSH_AUTH_SOCK unless the step sets it. An agent
    /// not given is skipped unless required.
    private func addSSHMount(
        id: String, target: String?, required: Bool, line: Int, to setup: inout StepMounts
    ) throws {
        setup.record.requested.append(("ssh", id, required))
        guard
            let socket = try given(
                runOptions.sshSockets[id], required: required, line: line,
                "ssh agent \(id) is required but was not given (hermetic build --ssh \(id)=…)")
        else { return }
        setup.record.sshIDs.append(id)
        let path = absolute(
            target ?? "/run/buildkit/ssh_agent.\(setup.record.sshIDs.count - 1)", setup.workingDirectory)
        setup.mounts.append(ExtraMount(.bind(source: socket), target: path))
        if !setup.names.contains("SSH_AUTH_SOCK") { setup.environment.append("SSH_AUTH_SOCK=\(path)") }
    }

    /// What the build was given for a secret or ssh mount; a mount not given is skipped (nil) unless it is
    /// required, when the step fails with `missing`.
    private func given<Value>(_ value: Value?, required: Bool, line: Int, _ missing: @autoclosure () -> String)
        throws -> Value?
    {
        if value == nil && required { throw stepError(line: line, missing()) }
        return value
    }

    private func absolute(_ target: String, _ workingDirectory: String) -> String {
        target.hasPrefix("/") ? target : Self.joinWorkdir(workingDirectory, target)
    }

    private func mountPoint(_ target: String, _ workingDirectory: String, _ text: String, line: Int) throws -> String {
        do {
            return try RunMount.mountPoint(target, workingDirectory: workingDirectory)
        } catch {
            throw DockerfileError(file: file, line: line, message: "RUN --mount=\(text): \(error)")
        }
    }

    /// The tree a bind or cache mount reads: the build context (default), a stage, an image or a directory.
    private mutating func mountSourceRoot(from: String?, key: String?, line: Int) throws -> (
        root: String, isContext: Bool
    ) {
        guard let from else { return (context.root, true) }
        let planned = plannedMountSource(key)
        let source = planned ?? .image(from)
        switch source {
        case .stage(let index):
            guard let other = try materializeStage(index) else {
                throw DockerfileError(file: file, line: line, message: "internal: stage \(index) not built")
            }
            return (other.rootfs, false)
        case .image(let reference):
            if case .directory(let directory)? = resolver.namedContexts[reference] {
                return (FileSystem.absolute(directory), false)
            }
            return (try imageRoot(reference, line: line), false)
        case .namedDirectory(let directory):
            return (directory, false)
        case .scratch:
            return (try nextDirectory("scratch"), false)
        }
    }

    /// A bind source as the step sees it. The build context is materialized through .dockerignore (so a
    /// step can read exactly what COPY could); a writable bind gets a private copy whose changes are thrown
    /// away; a read-only stage or image path is bound in place.
    private mutating func materializeBindSource(
        root: (root: String, isContext: Bool), source: String, readWrite: Bool,
        fromContext: Bool, line: Int
    ) throws -> String {
        let tree = BuildContext(
            root: root.root, ignore: root.isContext ? context.ignore : DockerIgnore(), isBuildContext: root.isContext)
        let components = try RootedPath.resolve(source, inRoot: root.root)
        if !root.isContext && !readWrite {
            guard RootedPath.status(components, inRoot: root.root) != nil else {
                throw DockerfileError(file: file, line: line, message: "RUN --mount source \(source): not found")
            }
            return tree.host(components)
        }
        let copyRoot = try nextDirectory("bind")
        var collector: [LayerEntry] = []
        guard let info = RootedPath.status(components, inRoot: root.root) else {
            throw DockerfileError(file: file, line: line, message: "RUN --mount source \(source): not found")
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            for (relative, childInfo) in try tree.walk(components) {
                let host = tree.host(components + relative)
                var entry = LayerEntry(
                    path: relative.joined(separator: "/"), kind: .directory, mode: UInt32(childInfo.st_mode) & 0o7777,
                    uid: childInfo.st_uid, gid: childInfo.st_gid, mtime: Int64(childInfo.st_mtim.tv_sec))
                switch childInfo.st_mode & S_IFMT {
                case S_IFDIR: break
                case S_IFLNK: entry.kind = .symlink(target: try RootedPath.readLink(host))
                case S_IFREG: entry.kind = .regular(.file(path: host, size: Int64(childInfo.st_size)))
                default: continue
                }
                collector.append(entry)
            }
        } else {
            // A single file: from the context only if .dockerignore lets COPY see it; bound read-write only
            // as a private copy, so the step never writes to the host's file.
            if root.isContext && tree.ignore.isExcluded(components.joined(separator: "/")) {
                throw DockerfileError(
                    file: file, line: line,
                    message: "RUN --mount source \(source): not found (or excluded by .dockerignore)")
            }
            guard readWrite || root.isContext else { return tree.host(components) }
            guard (info.st_mode & S_IFMT) == S_IFREG else {
                guard !readWrite else {
                    throw DockerfileError(
                        file: file, line: line,
                        message: "RUN --mount source \(source): a read-write bind must be a directory or a regular file"
                    )
                }
                return tree.host(components)
            }
            collector.append(
                LayerEntry(
                    path: "file", kind: .regular(.file(path: tree.host(components), size: Int64(info.st_size))),
                    mode: UInt32(info.st_mode) & 0o7777, uid: info.st_uid, gid: info.st_gid,
                    mtime: Int64(info.st_mtim.tv_sec)))
        }
        if !collector.isEmpty {
            let tar = try LayerWriter(sourceDateEpoch: Int64.max).writeUncompressedTar(collector, into: copyRoot)
            let unpacked = copyRoot + "/tree"
            try FileSystem.makeDirectory(unpacked)
            _ = try LayerApplier().apply(
                blobAt: tar.blobPath, mediaType: MediaType.layerTar, expectedDiffID: tar.diffID, toRoot: unpacked)
            unlink(tar.blobPath)
            return (info.st_mode & S_IFMT) == S_IFDIR ? unpacked : unpacked + "/file"
        }
        return copyRoot
    }

    private func secretValue(id: String, source: SecretSource, line: Int) throws -> [UInt8] {
        switch source {
        case .file(let path):
            do {
                return try FileSystem.readFile(path, limit: 1 << 20)
            } catch {
                throw DockerfileError(file: file, line: line, message: "secret \(id): its file cannot be read")
            }
        case .environment(let variable):
            guard let value = runOptions.environment[variable] else {
                throw DockerfileError(
                    file: file, line: line, message: "secret \(id): its environment variable is not set")
            }
            return Array(value.utf8)
        }
    }

    /// Secrets are written to a private directory of the workspace (removed with it), never into a layer.
    private mutating func writeSecret(_ value: [UInt8], id: String, mode: UInt32, uid: UInt32, gid: UInt32) throws
        -> String
    {
        let directory = try nextDirectory("secret")
        chmod(directory, 0o700)
        let path = directory + "/value"
        try FileSystem.writeAtomically(value, to: path, mode: mode_t(mode))
        chown(path, uid, gid)
        return path
    }
}
