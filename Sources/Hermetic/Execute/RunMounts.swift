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
