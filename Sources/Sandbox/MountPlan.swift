internal import CSandbox

#if canImport(Glibc)
    import Glibc
#endif

/// One typed setup operation, applied in order by the child (see hermetic_sandbox.h).
struct MountOperation: Equatable {
    enum Kind: UInt32 {
        case overlay = 1
        case bind, bindReadOnly, proc, tmpfs, devpts, mkdir, file, symlink, remountReadOnly, bindRoot

        var name: String {
            switch self {
            case .overlay: "overlay"
            case .bind: "bind"
            case .bindReadOnly: "bind-readonly"
            case .proc: "proc"
            case .tmpfs: "tmpfs"
            case .devpts: "devpts"
            case .mkdir: "mkdir"
            case .file: "file"
            case .symlink: "symlink"
            case .remountReadOnly: "remount-readonly"
            case .bindRoot: "bind-root"
            }
        }
    }

    var kind: Kind
    var target: String
    var source: String? = nil
    var data: String? = nil
    var mountFlags: UInt64 = 0
    var mode: UInt32 = 0
    var optional = false
}

private let readOnly: UInt64 = 1
private let noSUID: UInt64 = 2
private let noDev: UInt64 = 4
private let noExec: UInt64 = 8

extension Sandbox {
    /// The ordered setup of the step's root: overlay, /proc (with Docker's read-only and masked paths),
    /// a builder-made /dev, builder-owned /etc/hosts and /etc/resolv.conf, then the plan's mounts.
    static func mountOperations(_ plan: SandboxPlan, layout: StepLayout) throws(SandboxError) -> [MountOperation] {
        var ops: [MountOperation] = []
        if plan.root == .copy {
            ops.append(.init(kind: .bindRoot, target: ".", source: plan.rootLayers[0], mountFlags: noDev))
            return try ops + mountOperationsOnRoot(plan, layout: layout)
        }
        // Every lower dir relative to their common ancestor, so hundreds of layers fit the one page of
        // mount options. Topmost first, as overlayfs wants; the stub layer shadows everything.
        let lowers = [layout.stubs] + plan.rootLayers.reversed()
        let base = commonDirectory(lowers + [plan.upperDirectory, layout.overlayWork])
        func relative(_ path: String) -> String { base == "/" ? path : String(path.dropFirst(base.count + 1)) }
        let options =
            "lowerdir=\(lowers.map(relative).joined(separator: ":")),upperdir=\(relative(plan.upperDirectory)),"
            + "workdir=\(relative(layout.overlayWork)),redirect_dir=nofollow,metacopy=off,index=off,xino=off"
            + (UserNamespace.isNested ? ",userxattr" : "") + (plan.failOverlayMount ? ",hermetic-fault-injection" : "")
        guard options.utf8.count < 4000 else {
            throw .invalidPlan(field: "rootLayers", reason: "overlay options exceed one page; use shorter layer paths")
        }
        // nodev: device nodes the step creates (it keeps CAP_MKNOD) cannot be opened.
        ops.append(.init(kind: .overlay, target: ".", source: base, data: options, mountFlags: noDev))
        return try ops + mountOperationsOnRoot(plan, layout: layout)
    }

    /// Everything after the root itself: /proc, /dev, the hosts files and the plan's mounts.
    private static func mountOperationsOnRoot(_ plan: SandboxPlan, layout: StepLayout) throws(SandboxError)
        -> [MountOperation]
    {
        var ops: [MountOperation] = []

        ops.append(.init(kind: .proc, target: "proc", mountFlags: noSUID | noDev | noExec))
        for path in ["proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger"] {
            ops.append(.init(kind: .remountReadOnly, target: path, mountFlags: noSUID | noDev | noExec, optional: true))
        }
        for path in ["proc/kcore", "proc/keys", "proc/latency_stats", "proc/timer_list", "proc/sched_debug"] {
            ops.append(.init(kind: .bind, target: path, source: "/dev/null", optional: true))
        }
        for path in ["proc/acpi", "proc/scsi"] {
            ops.append(.init(kind: .tmpfs, target: path, data: "size=0", mountFlags: readOnly, optional: true))
        }

        ops.append(.init(kind: .tmpfs, target: "dev", data: "mode=0755,size=65536k", mountFlags: noSUID | noDev))
        for device in ["null", "zero", "full", "random", "urandom", "tty"] {
            ops.append(.init(kind: .file, target: "dev/" + device, mode: 0o666))
            ops.append(.init(kind: .bind, target: "dev/" + device, source: "/dev/" + device))
        }
        ops.append(.init(kind: .mkdir, target: "dev/pts", mode: 0o755))
        ops.append(
            .init(
                kind: .devpts, target: "dev/pts", data: "newinstance,ptmxmode=0666,mode=0620",
                mountFlags: noSUID | noExec))
        ops.append(.init(kind: .symlink, target: "dev/ptmx", source: "pts/ptmx"))
        ops.append(.init(kind: .mkdir, target: "dev/shm", mode: 0o1777))
        ops.append(
            .init(
                kind: .tmpfs, target: "dev/shm",
                data: "mode=1777,size=" + (plan.devShmSize.map { String($0) } ?? "65536k"),
                mountFlags: noSUID | noDev | noExec))
        ops.append(.init(kind: .symlink, target: "dev/fd", source: "/proc/self/fd"))
        for (index, name) in ["stdin", "stdout", "stderr"].enumerated() {
            ops.append(.init(kind: .symlink, target: "dev/" + name, source: "/proc/self/fd/\(index)"))
        }
        if let pipes = plan.devPipes {
            // Its mountpoint lives in the /dev tmpfs, so it needs no stub and never reaches the upper dir.
            ops.append(.init(kind: .mkdir, target: "dev/pipes", mode: 0o755))
            ops.append(.init(kind: .bindReadOnly, target: "dev/pipes", source: pipes, mountFlags: noSUID | noDev))
        }

        ops.append(
            .init(
                kind: .bindReadOnly, target: "etc/hosts", source: layout.hostsFile, mountFlags: noSUID | noDev | noExec)
        )
        ops.append(
            .init(
                kind: .bindReadOnly, target: "etc/resolv.conf", source: layout.resolvConfFile,
                mountFlags: noSUID | noDev | noExec))

        for mount in plan.mounts where !mount.isDevShm {
            let target = try relativeTarget(mount.target)
            switch mount.kind {
            case .tmpfs(let size):
                ops.append(
                    .init(kind: .tmpfs, target: target, data: "mode=0755,size=\(size)", mountFlags: noSUID | noDev))
            case .bindReadOnly(let source):
                ops.append(.init(kind: .bindReadOnly, target: target, source: source, mountFlags: noSUID | noDev))
            case .bind(let source):
                ops.append(.init(kind: .bind, target: target, source: source, mountFlags: noSUID | noDev))
            }
        }
        return ops
    }

    static func commonDirectory(_ paths: [String]) -> String {
        guard let first = paths.first else { return "/" }
        var common = first.split(separator: "/")
        for path in paths.dropFirst() {
            let parts = path.split(separator: "/")
            var shared = 0
            while shared < min(common.count, parts.count) && common[shared] == parts[shared] { shared += 1 }
            common = Array(common.prefix(shared))
        }
        // A path itself is never the base: its relative form would be empty.
        if paths.contains(where: { $0.split(separator: "/").count == common.count }) { common.removeLast() }
        return "/" + common.joined(separator: "/")
    }
}

/// The sandbox's own entries in `workDirectory`: the root mountpoint, the overlay work dir, the stub
/// layer (mountpoints, so nothing is ever created in the upper dir or mounted through an image symlink)
/// and the builder-owned hosts/resolv.conf files.
struct StepLayout {
    let base: String
    var root: String { base + "/root" }
    var overlayWork: String { base + "/overlay-work" }
    var stubs: String { base + "/stubs" }
    var files: String { base + "/files" }
    var hostsFile: String { files + "/hosts" }
    var resolvConfFile: String { files + "/resolv.conf" }

    static func prepare(_ plan: SandboxPlan) throws(SandboxError) -> StepLayout {
        var info = stat()
        for directory in [plan.upperDirectory, plan.workDirectory] + plan.rootLayers
            + [plan.devPipes].compactMap({ $0 })
        {
            guard lstat(directory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
                throw .system(call: "lstat (must be a directory)", path: directory, errno: errno == 0 ? ENOTDIR : errno)
            }
        }
        let base = plan.workDirectory + "/hermetic-sandbox"
        guard mkdir(base, 0o700) == 0 else { throw .system(call: "mkdir", path: base, errno: errno) }
        let layout = StepLayout(base: base)
        do {
            for directory in [layout.root, layout.overlayWork, layout.stubs, layout.files] {
                guard mkdir(directory, 0o755) == 0 else {
                    throw SandboxError.system(call: "mkdir", path: directory, errno: errno)
                }
            }
            // The stub layer is the overlay's top: its root is the step's `/`, so it takes the image's.
            if let top = plan.rootLayers.last, lstat(top, &info) == 0 {
                chmod(layout.stubs, info.st_mode & 0o7777)
                lchown(layout.stubs, info.st_uid, info.st_gid)
                var times = [info.st_atim, info.st_mtim]
                utimensat(AT_FDCWD, layout.stubs, &times, AT_SYMLINK_NOFOLLOW)
            }
            var hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            hosts += "127.0.1.1\t\(plan.hostname)\n"
            try writeFile(layout.hostsFile, hosts, create: true)
            let resolvConf =
                plan.network == .host ? (readSmallFile("/etc/resolv.conf") ?? "") : "# no network in this step\n"
            try writeFile(layout.resolvConfFile, resolvConf, create: true)
            let lower = LowerView(layers: plan.rootLayers)
            try layout.makeStub("proc", directory: true, lower: lower)
            try layout.makeStub("dev", directory: true, lower: lower)
            try layout.makeStub("etc/hosts", directory: false, lower: lower)
            try layout.makeStub("etc/resolv.conf", directory: false, lower: lower)
            for mount in plan.mounts where !mount.isDevShm {
                let target = try Sandbox.relativeTarget(mount.target)
                var isDirectory = true
                switch mount.kind {
                case .tmpfs: isDirectory = true
                case .bind(let source), .bindReadOnly(let source):
                    guard stat(source, &info) == 0 else {
                        throw SandboxError.system(call: "stat", path: source, errno: errno)
                    }
                    isDirectory = info.st_mode & S_IFMT == S_IFDIR
                }
                try layout.makeStub(target, directory: isDirectory, lower: lower)
            }
        } catch let error as SandboxError {
            layout.remove()
            throw error
        } catch {
            layout.remove()
            throw .system(call: "prepare", path: base, errno: EIO)
        }
        return layout
    }

    /// Creates `relative` in the stub layer. Parents take their owner, mode and times from the image so
    /// the merged view (and any copy-up) is unchanged; a parent that is a symlink or a non-directory in
    /// the image is refused. The final component replaces whatever the image has there (even a symlink).
    private func makeStub(_ relative: String, directory: Bool, lower: LowerView) throws(SandboxError) {
        let components = relative.split(separator: "/").map(String.init)
        var prefix = ""
        for (index, component) in components.enumerated() {
            prefix += (prefix.isEmpty ? "" : "/") + component
            let isLast = index == components.count - 1
            let image = lower.entry(prefix)
            if !isLast, let image, image.st_mode & S_IFMT != S_IFDIR {
                let kind = image.st_mode & S_IFMT == S_IFLNK ? "a symlink" : "not a directory"
                throw .unsafeMountpoint(path: "/" + relative, reason: "/\(prefix) is \(kind) in the image")
            }
            let path = stubs + "/" + prefix
            var existing = stat()
            if lstat(path, &existing) == 0 { continue }
            if isLast && !directory {
                let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0o644)
                guard fd >= 0 else { throw .system(call: "open", path: path, errno: errno) }
                close(fd)
            } else {
                guard mkdir(path, 0o755) == 0 else { throw .system(call: "mkdir", path: path, errno: errno) }
            }
            if let image, image.st_mode & S_IFMT == (isLast && !directory ? S_IFREG : S_IFDIR) {
                chmod(path, image.st_mode & 0o7777)
                lchown(path, image.st_uid, image.st_gid)
                var times = [image.st_atim, image.st_mtim]
                utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
            } else {
                var times = [timespec(tv_sec: 0, tv_nsec: 0), timespec(tv_sec: 0, tv_nsec: 0)]
                utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
            }
        }
    }

    func remove() {
        removeTree(base, depth: 0)
    }

    /// For a root that is a copy (`RootMechanism.copy`): makes the stub layer's mountpoints in the copy
    /// itself, with the stubs' metadata. What the copy already has with the right type is used as it is;
    /// a final component of another type (a symlink, say) is moved aside and put back by `undo`. The
    /// directory around each change keeps its times, so the step's layer sees nothing of this.
    func installStubs(into copy: String) throws(SandboxError) -> StubInstallation {
        var installation = StubInstallation(root: copy)
        var pending = [""]
        var asideCount = 0
        do throws(SandboxError) {
            while let relative = pending.popLast() {
                let names = Sandbox.directoryNames(stubs + (relative.isEmpty ? "" : "/" + relative)).sorted()
                for name in names.reversed() {
                    let path = relative.isEmpty ? name : relative + "/" + name
                    var stub = stat()
                    guard lstat(stubs + "/" + path, &stub) == 0 else {
                        throw .system(call: "lstat", path: stubs + "/" + path, errno: errno)
                    }
                    let isDirectory = stub.st_mode & S_IFMT == S_IFDIR
                    var existing = stat()
                    let target = copy + "/" + path
                    if lstat(target, &existing) == 0 {
                        if existing.st_mode & S_IFMT == stub.st_mode & S_IFMT {
                            if isDirectory { pending.append(path) }
                            continue
                        }
                        asideCount += 1
                        let aside = base + "/aside-\(asideCount)"
                        try StubInstallation.keepingParentTimes(target) { () throws(SandboxError) in
                            guard rename(target, aside) == 0 else {
                                throw .system(call: "rename", path: target, errno: errno)
                            }
                        }
                        installation.changes.append((relative: path, aside: aside))
                    } else {
                        installation.changes.append((relative: path, aside: nil))
                    }
                    try StubInstallation.keepingParentTimes(target) { () throws(SandboxError) in
                        if isDirectory {
                            guard mkdir(target, 0o700) == 0 else {
                                throw .system(call: "mkdir", path: target, errno: errno)
                            }
                        } else {
                            let fd = open(target, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0o600)
                            guard fd >= 0 else { throw .system(call: "open", path: target, errno: errno) }
                            close(fd)
                        }
                    }
                    lchown(target, stub.st_uid, stub.st_gid)
                    chmod(target, stub.st_mode & 0o7777)
                    var times = [stub.st_atim, stub.st_mtim]
                    utimensat(AT_FDCWD, target, &times, AT_SYMLINK_NOFOLLOW)
                    if isDirectory { pending.append(path) }
                }
            }
        } catch {
            installation.undo()
            throw error
        }
        return installation
    }
}

/// The mountpoints made in a copied root for one step, undone (newest first) once the step is over.
struct StubInstallation {
    /// The copy, relative to which `changes` are named.
    let root: String
    var changes: [(relative: String, aside: String?)] = []

    /// Removes what was made (a directory the step filled stays, as it would in an upper directory) and
    /// puts back what was moved aside. The step has had the copy: every parent is opened beneath the copy
    /// with no symlink followed (a step may have replaced one with a link out of it), and a change whose
    /// parent cannot be opened so is left as the step left it.
    func undo() {
        let rootFD = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard rootFD >= 0 else { return }
        defer { close(rootFD) }
        for change in changes.reversed() {
            let slash = change.relative.lastIndex(of: "/")
            let parent = slash.map { String(change.relative[..<$0]) } ?? "."
            let name = slash.map { String(change.relative[change.relative.index(after: $0)...]) } ?? change.relative
            let parentFD = hermetic_open_beneath(rootFD, parent, O_RDONLY | O_DIRECTORY)
            guard parentFD >= 0 else { continue }
            defer { close(parentFD) }
            var times = stat()
            let known = fstat(parentFD, &times) == 0
            if unlinkat(parentFD, name, AT_REMOVEDIR) != 0 && errno == ENOTDIR { unlinkat(parentFD, name, 0) }
            if let aside = change.aside { renameat(AT_FDCWD, aside, parentFD, name) }
            if known {
                var kept = [times.st_atim, times.st_mtim]
                futimens(parentFD, &kept)
            }
        }
    }

    static func keepingParentTimes(_ path: String, _ body: () throws(SandboxError) -> Void) throws(SandboxError) {
        let parent = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        var info = stat()
        let known = lstat(parent.isEmpty ? "/" : parent, &info) == 0
        defer {
            if known {
                var times = [info.st_atim, info.st_mtim]
                utimensat(AT_FDCWD, parent.isEmpty ? "/" : parent, &times, AT_SYMLINK_NOFOLLOW)
            }
        }
        try body()
    }
}

/// What the image (the lower layers, overlayfs form) has at a path, without following any symlink.
struct LowerView {
    let layers: [String]

    func entry(_ relative: String) -> stat? {
        let components = relative.split(separator: "/").map(String.init)
        layerLoop: for layer in layers.reversed() {
            var info = stat()
            var path = layer
            var hidesLowerLayers = false  // an opaque directory on the way
            for (index, component) in components.enumerated() {
                path += "/" + component
                guard lstat(path, &info) == 0 else {
                    if hidesLowerLayers { return nil }
                    continue layerLoop
                }
                if info.st_mode & S_IFMT == S_IFCHR && info.st_rdev == 0 { return nil }  // whiteout
                if index == components.count - 1 { return info }
                // A non-directory here hides everything below it in lower layers.
                if info.st_mode & S_IFMT != S_IFDIR { return nil }
                if isOpaque(path) { hidesLowerLayers = true }
            }
        }
        return nil
    }

    private func isOpaque(_ path: String) -> Bool {
        var value: UInt8 = 0
        return lgetxattr(path, UserNamespace.overlayXattrPrefix + "opaque", &value, 1) == 1
            && value == UInt8(ascii: "y")
    }
}

/// Removes a tree the sandbox created, never following symlinks; bounded depth.
func removeTree(_ path: String, depth: Int) {
    var info = stat()
    guard depth < 64, lstat(path, &info) == 0 else { return }
    if info.st_mode & S_IFMT == S_IFDIR {
        if let directory = opendir(path) {
            var names: [String] = []
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(directory)
            for name in names { removeTree(path + "/" + name, depth: depth + 1) }
        }
        rmdir(path)
    } else {
        unlink(path)
    }
}
