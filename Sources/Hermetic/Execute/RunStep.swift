import Foundation
import Sandbox

#if canImport(Glibc)
    import Glibc
#endif

/// What the person running the build allows and provides for RUN steps.
struct RunOptions: Sendable {
    var secrets: [String: SecretSource] = [:]
    var sshSockets: [String: String] = [:]
    var entitlements: Set<Entitlement> = []
    var stepTimeoutSeconds: Int?
    var stateDirectory: String
    var showOutput = true
    /// The builder's environment, only for `--secret id=…,env=VAR` values.
    var environment: [String: String] = [:]
    var rootMechanism: RunRootMechanism = .automatic
    /// `HERMETIC_TEST_FAIL_OVERLAY=1`: every overlay mount fails (fault injection for the fallback's tests).
    var failOverlayMount = false
}

/// How a RUN step's root is made (`HERMETIC_RUN_ROOT`, SPEC §2.4): overlayfs, falling back to a copy when
/// it cannot be mounted (`automatic`), or always one of the two. Either gives the same layer.
public enum RunRootMechanism: String, Sendable {
    case automatic = "auto"
    case overlay
    case copy
}

/// What one RUN step did that provenance needs (issue 4): never a secret's value.
struct RunRecord: Sendable {
    var line: Int
    var network: String
    var cacheMounts: [(id: String, hadData: Bool)]
    var secretIDs: [String]
    var sshIDs: [String]
    /// Every secret and ssh mount the step asked for (given or not), with its `required` flag.
    var requested: [(kind: String, id: String, required: Bool)] = []
}

extension StageExecutor {
    /// Runs one RUN step in the sandbox: the stage's root filesystem is the read-only lower layer, a fresh
    /// upper directory takes the changes, which become at most one layer. Returns the entries (empty when
    /// the step changed nothing).
    mutating func runStep(
        _ run: RunInstruction, instruction: Instruction, position: Int?, stage: PlannedStage,
        state: inout StageState
    ) throws -> [LayerEntry] {
        let line = instruction.range.start.line
        func fail(_ message: String) -> DockerfileError { DockerfileError(file: file, line: line, message: message) }
        let container = state.config.config ?? ContainerConfig()
        let scope = state.scope

        // Network and security: a Dockerfile can ask, only the person running the build can grant.
        var network = SandboxPlan.Network.none
        switch run.network {
        case "host"?:
            guard runOptions.entitlements.contains(.networkHost) else {
                throw fail(
                    "RUN --network=host needs the network.host entitlement (hermetic build --allow network.host)")
            }
            network = .host
        case "default"?:
            // BuildKit's default is a sandbox network with outbound access; Hermetic has no such network.
            throw fail(
                "RUN --network=default: Hermetic steps have no network (use --network=none, or RUN --network=host "
                    + "with hermetic build --allow network.host)")
        default: network = .none
        }
        if run.security == "insecure" {
            guard runOptions.entitlements.contains(.securityInsecure) else {
                throw fail(
                    "RUN --security=insecure needs the security.insecure entitlement (hermetic build --allow security.insecure)"
                )
            }
            throw fail("RUN --security=insecure is not supported: every step runs in the sandbox")
        }

        // The command line.
        let shell = container.shell ?? ["/bin/sh", "-c"]
        var argv: [String]
        var devPipes: String?
        switch run.command {
        case .exec(let arguments):
            argv = arguments
        case .shell(let text):
            // BuildKit runs the body as the script when the whole command is one heredoc word (`<< EOF` too).
            let markerOnly = InstructionBuilder(file: file, escape: plan.escape).heredocMarker(text) != nil
            if run.heredocs.count == 1, let only = run.heredocs.first, markerOnly {
                if only.content.hasPrefix("#!") {
                    // As BuildKit: a `#!` body becomes /dev/pipes/NAME (0755, mounted read-only), run as a file.
                    devPipes = try inlineScript(only, line: line)
                    argv = shell + ["/dev/pipes/" + only.name]
                } else {
                    argv = shell + [only.content]  // `RUN <<EOF`: the body is the script
                }
            } else if !run.heredocs.isEmpty {
                // `RUN cmd <<EOF`: the shell itself reads the heredocs.
                argv = shell + [text + "\n" + run.heredocs.map { $0.content + $0.name + "\n" }.joined()]
            } else {
                argv = shell + [text]
            }
        }
        guard !argv.isEmpty else { throw fail("RUN: empty command") }

        // The environment: the stage's build environment (ENV and ARGs with a value, the last to set a name
        // winning), then proxy build args.
        var environment: [String] = scope.variableLines
        var names = Set(scope.variables.map(\.name))
        // BuildKit appends the proxy variables after the step's own; the runtime keeps the last of a name.
        for entry in Planner.proxyEnvironment(buildArguments) {
            let name = String(entry.prefix { $0 != "=" })
            if let index = environment.firstIndex(where: { $0.hasPrefix(name + "=") }) {
                environment[index] = entry
            } else {
                environment.append(entry)
            }
            names.insert(name)
        }
        if !names.contains("PATH") { environment.append(Self.defaultPath) }
        if !names.contains("SOURCE_DATE_EPOCH") { environment.append("SOURCE_DATE_EPOCH=\(sourceDateEpoch)") }

        // User and working directory.
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        var groups: [UInt32] = []
        do {
            (uid, gid, groups) = try UserDatabase(root: state.rootfs).resolveUser(container.user ?? "")
        } catch {
            throw fail("USER \(container.user ?? ""): \(error)")
        }
        if let unmapped = Self.unmappedIDs(uid: uid, gid: gid) {
            throw fail(
                "USER \(container.user ?? ""): \(unmapped) not mapped in the builder's user namespace (rootless mode: "
                    + "give the user ranges in /etc/subuid and /etc/subgid and install newuidmap (Debian's uidmap), "
                    + "or build as root)")
        }
        let workingDirectory = container.workingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/"

        // A WORKDIR the image names but does not have is created, as BuildKit does; it lands in the layer.
        let resolvedWorkdir = try RootedPath.resolve(workingDirectory, inRoot: state.rootfs)
        let missingWorkdir = RootedPath.status(resolvedWorkdir, inRoot: state.rootfs) == nil ? resolvedWorkdir : nil

        // Mounts.
        var mounts: [ExtraMount] = []
        // Cache mounts stay held (their sharing modes' locks) until the step is over.
        var cacheHolds: [CacheMountHold] = []
        defer { cacheHolds.forEach { $0.release() } }
        var record = RunRecord(
            line: line, network: network == .host ? "host" : "none", cacheMounts: [], secretIDs: [], sshIDs: [])
        for (mountIndex, text) in run.mounts.enumerated() {
            let expandedText: String
            do {
                expandedText = try lexer.processWord(text, lookup: { scope.lookup($0) })
            } catch {
                throw fail("RUN --mount=\(text): \(error)")
            }
            let mount: RunMount
            do {
                mount = try RunMount.parse(expandedText)
            } catch {
                throw fail("RUN \(error)")
            }
            let key = position.map { "\($0):\(mountIndex)" }
            switch mount {
            case .tmpfs(let target, let size):
                mounts.append(
                    ExtraMount(
                        .tmpfs(sizeBytes: size), target: try mountPoint(target, workingDirectory, text, line: line)))
            case .bind(let target, let source, let from, let readWrite):
                let point = try mountPoint(target, workingDirectory, text, line: line)
                let root = try mountSourceRoot(from: from, key: key, line: line)
                let materialized = try materializeBindSource(
                    root: root, source: source, readWrite: readWrite,
                    fromContext: from == nil, line: line)
                mounts.append(
                    ExtraMount(
                        readWrite ? .bind(source: materialized) : .bindReadOnly(source: materialized),
                        target: point))
            case .cache(let target, let id, let sharing, _, _, let mode, let cacheUID, let cacheGID):
                let point = try mountPoint(target, workingDirectory, text, line: line)
                // One id twice in a step is one directory (a second lock would wait for the first).
                let hold =
                    try cacheHolds.first { $0.id == id }
                    ?? CacheMountHold.acquire(
                        base: runOptions.stateDirectory + "/cache", id: id, sharing: sharing, mode: mode,
                        uid: cacheUID, gid: cacheGID,
                        waiting: {
                            log.warning(
                                "Dockerfile:\(line): waiting for cache mount \(id) (sharing=locked), which another step uses"
                            )
                        })
                if !cacheHolds.contains(where: { $0.id == id }) { cacheHolds.append(hold) }
                let directory = hold.directory
                record.cacheMounts.append((id, !(FileSystem.directoryByteNames(directory) ?? []).isEmpty))
                mounts.append(
                    ExtraMount(.bind(source: directory), target: point))
            case .secret(let id, let target, let env, let required, let mode, let secretUID, let secretGID):
                record.requested.append(("secret", id, required))
                guard let source = runOptions.secrets[id] else {
                    if required {
                        throw fail(
                            "secret \(id) is required but was not given (hermetic build --secret id=\(id),src=…)")
                    }
                    continue
                }
                record.secretIDs.append(id)
                let value = try secretValue(id: id, source: source, line: line)
                if let env {
                    environment.removeAll { $0.hasPrefix(env + "=") }
                    environment.append(env + "=" + String(decoding: value, as: UTF8.self))
                }
                if target != nil || env == nil {
                    let secretFile = try writeSecret(value, id: id, mode: mode, uid: secretUID, gid: secretGID)
                    mounts.append(
                        ExtraMount(
                            .bindReadOnly(source: secretFile),
                            target: absolute(target ?? "/run/secrets/\(id)", workingDirectory)))
                }
            case .ssh(let id, let target, let required):
                record.requested.append(("ssh", id, required))
                guard let socket = runOptions.sshSockets[id] else {
                    if required {
                        throw fail("ssh agent \(id) is required but was not given (hermetic build --ssh \(id)=…)")
                    }
                    continue
                }
                record.sshIDs.append(id)
                let path = absolute(target ?? "/run/buildkit/ssh_agent.\(record.sshIDs.count - 1)", workingDirectory)
                mounts.append(ExtraMount(.bind(source: socket), target: path))
                if !names.contains("SSH_AUTH_SOCK") { environment.append("SSH_AUTH_SOCK=\(path)") }
            }
        }
        self.record.steps.append(record)

        if let capabilities = BuilderCapabilities.current {
            let missing = capabilities.missingForSandbox(hostNetwork: network == .host)
            guard missing.isEmpty else {
                let flags = missing.map { $0.dropFirst("CAP_".count) }.joined(separator: ",")
                throw fail(
                    "RUN needs capabilities this builder lacks: \(missing.joined(separator: ", ")) (in a container: run it "
                        + "--privileged, or with --cap-add=\(flags))")
            }
            let withheld = capabilities.withheldFromSteps
            if !withheld.isEmpty && !warnedAboutCapabilities {
                warnedAboutCapabilities = true
                log.warning(
                    "RUN steps get Docker's default capabilities without \(withheld.joined(separator: ", ")), which this "
                        + "builder lacks")
            }
        }
        if rootMechanism == .automatic && !Sandbox.canNameInOverlayOptions(workspace) {
            log.warning(
                "RUN: the workspace \(workspace) has ':', ',', '\\' or a newline in its path, which overlayfs options "
                    + "cannot hold: steps run on a copy of the stage's filesystem instead (slower, same layers)")
            rootMechanism = .copy
        }
        var root = try prepareRoot(
            copy: rootMechanism == .copy, stage: state, missingWorkdir: missingWorkdir, line: line)
        var result: SandboxResult
        while true {
            var plan = SandboxPlan(
                rootLayers: root.layers, upperDirectory: root.upper, workDirectory: root.work, argv: argv,
                environment: environment, uid: uid, gid: gid, groups: groups, workingDirectory: workingDirectory,
                hostname: "buildkitsandbox", network: network, mounts: mounts, devPipes: devPipes,
                timeoutSeconds: runOptions.stepTimeoutSeconds)
            plan.root = root.untouched == nil ? .overlay : .copy
            plan.failOverlayMount = runOptions.failOverlayMount
            let relay = try StepOutputRelay(
                log: runOptions.showOutput ? log : nil, secrets: secretValues.map(\.value))
            do {
                // When run returns, every process of the step is gone: nothing else holds the pipe's write end.
                defer { relay.finish() }
                result = try Sandbox.run(plan, stdout: relay.writeEnd, stderr: relay.writeEnd)
                break
            } catch .childSetup(let step, 0, _, let code) where step == "mount overlay" && rootMechanism == .automatic {
                // Nothing of the step ran: run it, and the build's later steps, on a copy of the root.
                log.warning(
                    "RUN: overlayfs cannot be mounted here (\(String(cString: strerror(code)))): steps run on a copy of the "
                        + "stage's filesystem instead (slower, same layers)")
                rootMechanism = .copy
                root = try prepareRoot(copy: true, stage: state, missingWorkdir: missingWorkdir, line: line)
            } catch {
                throw fail("RUN could not start: \(error)\(Self.hint(for: error))")
            }
        }
        if !result.pidsLimitEnforced && !warnedAboutPidsLimit {
            warnedAboutPidsLimit = true
            log.warning(
                "RUN: no pids cgroup can be made here, and the kernel does not apply RLIMIT_NPROC to root: steps as root "
                    + "run without a process limit (only --step-timeout bounds them)")
        }
        let shown = argv.joined(separator: " ")
        let command = shown.count > 200 ? String(shown.prefix(200)) + "…" : shown
        guard result.succeeded else {
            let how: String
            switch result.termination {
            case .exited(let code): how = "exit code: \(code)"
            case .signaled(let signal): how = "killed by signal \(signal)"
            }
            let why = result.timedOut ? " (step timeout)" : result.pidsLimitReached ? " (pids limit reached)" : ""
            // BuildKit's steps have network by default, ours do not: say so where a download is the likely cause.
            let offline =
                run.network == nil
                ? "; it had no network (Hermetic's default; grant the host's with RUN --network=host and hermetic "
                    + "build --allow network.host)" : ""
            throw fail(
                "RUN: process \"\(command.replacingOccurrences(of: "\n", with: "\\n"))\" did not complete successfully: \(how)\(why)\(offline)"
            )
        }
        do {
            if let untouched = root.untouched {
                return try StepDiff().entries(ofCopy: root.layers[0], lower: state.rootfs, untouched: untouched)
            }
            return try StepDiff().entries(ofUpperDirectory: root.upper, lower: state.rootfs)
        } catch let error as StepDiff.NameNotUTF8 {
            throw fail("RUN: the step \(error)")
        }
    }

    /// A step's root: `layers` under an overlay with `upper`, or (`untouched` set) `layers[0]`, a copy of
    /// the stage's filesystem that the step changes in place.
    struct StepRoot {
        var layers: [String]
        var upper: String
        var work: String
        var untouched: StepDiff.Untouched?
    }

    private mutating func prepareRoot(copy: Bool, stage state: StageState, missingWorkdir: [String]?, line: Int)
        throws -> StepRoot
    {
        let stepDirectory = try nextDirectory("run")
        if !copy { try mountScratchIfNeeded(stepDirectory, line: line) }
        var root = StepRoot(layers: [state.rootfs], upper: stepDirectory + "/upper", work: stepDirectory + "/work")
        try FileSystem.makeDirectory(root.upper)
        try FileSystem.makeDirectory(root.work)
        if copy {
            let tree = stepDirectory + "/root"
            do {
                root.untouched = try RootCopy().copy(state.rootfs, to: tree)
            } catch let error as HermeticError {
                throw DockerfileError(file: file, line: line, message: "RUN: copying the stage's filesystem: \(error)")
            }
            root.layers = [tree]
            // The copy is read for the layer, then removed with the step's scratch mounts.
            temporaryTrees.append(tree)
        }
        if let missingWorkdir {
            try Self.createWorkingDirectory(
                missingWorkdir, lower: state.rootfs, result: copy ? root.layers[0] : root.upper, isCopy: copy)
        }
        return root
    }

    /// Creates a WORKDIR the image lacks (0755, root's), as BuildKit does, so it lands in the step's layer.
    /// The step's layer must not see the builder's hand: a parent the image has is made in an upper
    /// directory with the image's owner, mode and times, and in a copy of the root the parent's times are
    /// put back after the mkdir.
    static func createWorkingDirectory(_ components: [String], lower: String, result: String, isCopy: Bool) throws {
        var prefix = ""
        for component in components {
            let parent = result + (prefix.isEmpty ? "/" : prefix)
            prefix += "/" + component
            var image = stat()
            let inImage = lstat(lower + prefix, &image) == 0 && (image.st_mode & S_IFMT) == S_IFDIR
            var existing = stat()
            if (inImage && isCopy) || lstat(result + prefix, &existing) == 0 { continue }
            var parentInfo = stat()
            let hadParent = lstat(parent, &parentInfo) == 0
            try FileSystem.makeDirectory(result + prefix)
            if inImage {
                chmod(result + prefix, image.st_mode & 0o7777)
                lchown(result + prefix, image.st_uid, image.st_gid)
                var times = [image.st_atim, image.st_mtim]
                utimensat(AT_FDCWD, result + prefix, &times, AT_SYMLINK_NOFOLLOW)
            } else {
                chmod(result + prefix, 0o755)
            }
            if hadParent {
                var times = [parentInfo.st_atim, parentInfo.st_mtim]
                utimensat(AT_FDCWD, parent, &times, AT_SYMLINK_NOFOLLOW)
            }
        }
    }

    /// What the environment is missing when a step's setup is refused, as seen inside containers.
    static func hint(for error: SandboxError) -> String {
        guard case .childSetup(let step, _, _, let code) = error, code == EPERM else { return "" }
        switch step {
        case "mount proc":
            return
                " (a fresh /proc needs the visible one unmasked: in a container, --security-opt unmask=ALL or --privileged)"
        case "sethostname":
            return " (the container's seccomp profile refuses it: --security-opt seccomp=unconfined or --privileged)"
        default:
            return ""
        }
    }

    /// In a user namespace (rootless mode), which of the step's ids have no host id; nil when all do.
    static func unmappedIDs(uid: UInt32, gid: UInt32) -> String? {
        guard UserNamespace.isNested else { return nil }
        let uidMapped = UserNamespace.mappedIDs("uid_map").contains { $0.contains(uid) }
        let gidMapped = UserNamespace.mappedIDs("gid_map").contains { $0.contains(gid) }
        switch (uidMapped, gidMapped) {
        case (true, true): return nil
        case (false, true): return "uid \(uid) is"
        case (true, false): return "gid \(gid) is"
        case (false, false): return "uid \(uid) and gid \(gid) are"
        }
    }

    /// overlayfs cannot use a directory on overlayfs as its upper layer, which is where a workspace under
    /// /tmp lives inside most containers. Then the step gets a private tmpfs for its upper and work
    /// directories; it is unmounted once the step's layer is written (or when the build ends).
    private mutating func mountScratchIfNeeded(_ directory: String, line: Int) throws {
        guard Sandbox.isOnOverlayfs(directory) else { return }
        guard mount("tmpfs", directory, "tmpfs", UInt(MS_NOSUID | MS_NODEV), "mode=0700") == 0 else {
            throw DockerfileError(
                file: file, line: line,
                message:
                    "RUN: the workspace is on overlayfs and no tmpfs could be mounted for the step (\(String(cString: strerror(errno))))"
            )
        }
        temporaryMounts.append(directory)
    }

    /// Unmounts the scratch filesystems of finished steps.
    mutating func releaseTemporaryMounts() {
        for directory in temporaryMounts.reversed() { umount2(directory, 2) }  // 2: MNT_DETACH
        temporaryMounts.removeAll()
        for tree in temporaryTrees { FileSystem.removeTree(tree) }
        temporaryTrees.removeAll()
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
        let planned = key.flatMap { k in plan.stages.lazy.compactMap { $0.mountSources[k] }.first }
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

    /// The directory for /dev/pipes holding a `RUN <<NAME` script as the file NAME (mode 0755), in the
    /// workspace (removed with it), never in a layer.
    private mutating func inlineScript(_ heredoc: Heredoc, line: Int) throws -> String {
        guard !heredoc.name.contains("/"), heredoc.name != ".", heredoc.name != ".." else {
            throw DockerfileError(
                file: file, line: line, message: "RUN <<\(heredoc.name): the heredoc name is not a file name")
        }
        let directory = try nextDirectory("script")
        chmod(directory, 0o755)  // the builder's umask must not hide it from a non-root USER
        try FileSystem.writeAtomically(Array(heredoc.content.utf8), to: directory + "/" + heredoc.name, mode: 0o755)
        return directory
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
