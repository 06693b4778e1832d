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
    /// Set while a stage runs under `StageScheduler`: stops its steps when another stage fails.
    var cancellation: StageCancellation?
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
        let container = state.config.config ?? ContainerConfig()
        let network = try stepNetwork(run, line: line)
        let (argv, devPipes) = try stepCommand(run, shell: container.shell ?? ["/bin/sh", "-c"], line: line)
        let (environment, names) = stepEnvironment(state.scope)
        let user = try stepUser(container.user ?? "", rootfs: state.rootfs, line: line)
        let workingDirectory = container.workingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/"

        // A WORKDIR the image names but does not have is created, as BuildKit does; it lands in the layer.
        let resolvedWorkdir = try RootedPath.resolve(workingDirectory, inRoot: state.rootfs)
        let missingWorkdir = RootedPath.status(resolvedWorkdir, inRoot: state.rootfs) == nil ? resolvedWorkdir : nil

        var setup = StepMounts(
            environment: environment, names: names, workingDirectory: workingDirectory,
            record: RunRecord(
                line: line, network: network == .host ? "host" : "none", cacheMounts: [], secretIDs: [], sshIDs: []))
        // Cache mounts stay held (their sharing modes' locks) until the step is over.
        defer { setup.cacheHolds.forEach { $0.release() } }
        try addMounts(run, position: position, scope: state.scope, line: line, to: &setup)
        self.record.steps.append(setup.record)

        try checkCapabilities(hostNetwork: network == .host, line: line)
        if rootMechanism == .automatic && !Sandbox.canNameInOverlayOptions(workspace) {
            log.warning(
                "RUN: the workspace \(workspace) has ':', ',', '\\' or a newline in its path, which overlayfs options "
                    + "cannot hold: steps run on a copy of the stage's filesystem instead (slower, same layers)")
            rootMechanism = .copy
        }
        let process = StepProcess(
            argv: argv, environment: setup.environment, uid: user.uid, gid: user.gid, groups: user.groups,
            workingDirectory: workingDirectory, network: network, mounts: setup.mounts, devPipes: devPipes)
        let (result, root) = try runInSandbox(process, state: state, missingWorkdir: missingWorkdir, line: line)
        if !result.pidsLimitEnforced && !warnedAboutPidsLimit {
            warnedAboutPidsLimit = true
            log.warning(
                "RUN: no pids cgroup can be made here, and the kernel does not apply RLIMIT_NPROC to root: steps as root "
                    + "run without a process limit (only --step-timeout bounds them)")
        }
        if result.cancelled { throw StageCancellation.Cancelled() }
        try checkSucceeded(result, argv: argv, run: run, line: line)
        do {
            if let untouched = root.untouched {
                return try StepDiff().entries(ofCopy: root.layers[0], lower: state.rootfs, untouched: untouched)
            }
            return try StepDiff().entries(ofUpperDirectory: root.upper, lower: state.rootfs)
        } catch let error as StepDiff.NameNotUTF8 {
            throw stepError(line: line, "RUN: the step \(error)")
        }
    }

    /// A RUN step's error at its Dockerfile line.
    func stepError(line: Int, _ message: String) -> DockerfileError {
        DockerfileError(file: file, line: line, message: message)
    }

    // MARK: RUN step setup

    /// The step's network. A Dockerfile can ask for network or insecure mode; only the person running the
    /// build can grant it.
    private func stepNetwork(_ run: RunInstruction, line: Int) throws -> SandboxPlan.Network {
        var network = SandboxPlan.Network.none
        switch run.network {
        case "host"?:
            guard runOptions.entitlements.contains(.networkHost) else {
                throw stepError(
                    line: line,
                    "RUN --network=host needs the network.host entitlement (hermetic build --allow network.host)")
            }
            network = .host
        case "default"?:
            // BuildKit's default is a sandbox network with outbound access; Hermetic has no such network.
            throw stepError(
                line: line,
                "RUN --network=default: Hermetic steps have no network (use --network=none, or RUN --network=host "
                    + "with hermetic build --allow network.host)")
        default: network = .none
        }
        if run.security == "insecure" {
            guard runOptions.entitlements.contains(.securityInsecure) else {
                throw stepError(
                    line: line,
                    "RUN --security=insecure needs the security.insecure entitlement (hermetic build --allow security.insecure)"
                )
            }
            throw stepError(line: line, "RUN --security=insecure is not supported: every step runs in the sandbox")
        }
        return network
    }

    /// The step's command line, and the /dev/pipes directory when a `#!` heredoc is run as a file.
    private mutating func stepCommand(_ run: RunInstruction, shell: [String], line: Int) throws -> (
        argv: [String], devPipes: String?
    ) {
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
        guard !argv.isEmpty else { throw stepError(line: line, "RUN: empty command") }
        return (argv, devPipes)
    }

    /// The environment: the stage's build environment (ENV and ARGs with a value, the last to set a name
    /// winning), then proxy build args; with the names it sets.
    private func stepEnvironment(_ scope: StageScope) -> (lines: [String], names: Set<String>) {
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
        return (environment, names)
    }

    /// The step's user, from the image's passwd and group files; in rootless mode its ids must be mapped.
    private func stepUser(_ user: String, rootfs: String, line: Int) throws -> (
        uid: UInt32, gid: UInt32, groups: [UInt32]
    ) {
        let resolved: (uid: UInt32, gid: UInt32, groups: [UInt32])
        do {
            resolved = try UserDatabase(root: rootfs).resolveUser(user)
        } catch {
            throw stepError(line: line, "USER \(user): \(error)")
        }
        if let unmapped = Self.unmappedIDs(uid: resolved.uid, gid: resolved.gid) {
            throw stepError(
                line: line,
                "USER \(user): \(unmapped) not mapped in the builder's user namespace (rootless mode: "
                    + "give the user ranges in /etc/subuid and /etc/subgid and install newuidmap (Debian's uidmap), "
                    + "or build as root)")
        }
        return resolved
    }

    /// Refuses a step this builder cannot sandbox (missing capabilities), and says once when steps get
    /// fewer capabilities than Docker's default set.
    private mutating func checkCapabilities(hostNetwork: Bool, line: Int) throws {
        guard let capabilities = BuilderCapabilities.current else { return }
        let missing = capabilities.missingForSandbox(hostNetwork: hostNetwork)
        guard missing.isEmpty else {
            let flags = missing.map { $0.dropFirst("CAP_".count) }.joined(separator: ",")
            throw stepError(
                line: line,
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

    // MARK: Running the step

    /// Everything the step's process gets, whichever way its root is made.
    struct StepProcess {
        var argv: [String]
        var environment: [String]
        var uid: UInt32
        var gid: UInt32
        var groups: [UInt32]
        var workingDirectory: String
        var network: SandboxPlan.Network
        var mounts: [ExtraMount]
        var devPipes: String?
    }

    /// Runs the step on a fresh root. With `automatic`, an overlay that cannot be mounted (before anything
    /// of the step ran) switches this and later steps to a copy of the root, and the step runs again.
    private mutating func runInSandbox(
        _ process: StepProcess, state: StageState, missingWorkdir: [String]?, line: Int
    ) throws -> (SandboxResult, StepRoot) {
        var root = try prepareRoot(
            copy: rootMechanism == .copy, stage: state, missingWorkdir: missingWorkdir, line: line)
        while true {
            var plan = SandboxPlan(
                rootLayers: root.layers, upperDirectory: root.upper, workDirectory: root.work, argv: process.argv,
                environment: process.environment, uid: process.uid, gid: process.gid, groups: process.groups,
                workingDirectory: process.workingDirectory, hostname: "buildkitsandbox", network: process.network,
                mounts: process.mounts, devPipes: process.devPipes, timeoutSeconds: runOptions.stepTimeoutSeconds)
            plan.root = root.untouched == nil ? .overlay : .copy
            plan.failOverlayMount = runOptions.failOverlayMount
            plan.cancelDescriptor = runOptions.cancellation?.descriptor
            let relay = try StepOutputRelay(
                log: runOptions.showOutput ? log : nil, secrets: secretValues.map(\.value))
            do {
                // When run returns, every process of the step is gone: nothing else holds the pipe's write end.
                defer { relay.finish() }
                return (try Sandbox.run(plan, stdout: relay.writeEnd, stderr: relay.writeEnd), root)
            } catch .childSetup(let step, 0, _, let code) where step == "mount overlay" && rootMechanism == .automatic {
                // Nothing of the step ran: run it, and the build's later steps, on a copy of the root.
                log.warning(
                    "RUN: overlayfs cannot be mounted here (\(String(cString: strerror(code)))): steps run on a copy of the "
                        + "stage's filesystem instead (slower, same layers)")
                rootMechanism = .copy
                root = try prepareRoot(copy: true, stage: state, missingWorkdir: missingWorkdir, line: line)
            } catch {
                throw stepError(line: line, "RUN could not start: \(error)\(Self.hint(for: error))")
            }
        }
    }

    /// A step that did not exit 0 fails the build, saying how it ended and, for a step without network,
    /// that it had none (BuildKit's steps have network by default, ours do not).
    private func checkSucceeded(_ result: SandboxResult, argv: [String], run: RunInstruction, line: Int) throws {
        guard !result.succeeded else { return }
        let shown = argv.joined(separator: " ")
        let command = shown.count > 200 ? String(shown.prefix(200)) + "…" : shown
        let how: String
        switch result.termination {
        case .exited(let code): how = "exit code: \(code)"
        case .signaled(let signal): how = "killed by signal \(signal)"
        }
        let why = result.timedOut ? " (step timeout)" : result.pidsLimitReached ? " (pids limit reached)" : ""
        // Say so where a download is the likely cause.
        let offline =
            run.network == nil
            ? "; it had no network (Hermetic's default; grant the host's with RUN --network=host and hermetic "
                + "build --allow network.host)" : ""
        throw stepError(
            line: line,
            "RUN: process \"\(command.replacingOccurrences(of: "\n", with: "\\n"))\" did not complete successfully: \(how)\(why)\(offline)"
        )
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
}
