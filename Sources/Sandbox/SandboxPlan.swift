/// Everything one RUN step executes with. Nothing else reaches the step: not the builder's
/// environment, file descriptors, network, mounts or capabilities.
public struct SandboxPlan: Sendable, Equatable {
    /// Unpacked parent layers in overlayfs form (whiteouts as 0/0 character devices), lowest first.
    /// Mounted read-only.
    public var rootLayers: [String]
    /// Receives every change the step makes (the new layer, in overlayfs form). Must exist.
    public var upperDirectory: String
    /// Scratch space on the same filesystem as `upperDirectory`; must exist. The sandbox creates and
    /// removes its own entries in it (overlay work dir, root mountpoint, mountpoint stubs, hosts files).
    public var workDirectory: String
    public var argv: [String]
    /// Exactly the step's environment, `NAME=value` entries. PATH for finding argv[0] comes from here.
    public var environment: [String]
    public var uid: UInt32
    public var gid: UInt32
    public var groups: [UInt32]
    /// Absolute, resolved inside the root (symlinks stay inside it); must exist.
    public var workingDirectory: String
    public var hostname: String
    public var network: Network
    public var mounts: [ExtraMount]
    /// A builder-made directory mounted read-only (nosuid, nodev) at `/dev/pipes`, inside the builder's
    /// `/dev`: where BuildKit puts a `RUN <<EOF` body that starts with `#!`, to be run as a file. Not a
    /// `mounts` entry because those may not reach into `/dev`.
    public var devPipes: String?
    /// The step is killed (SIGKILL to its PID 1, which takes the whole PID namespace) after this long.
    public var timeoutSeconds: Int?
    /// Most processes the step may have at once (cgroup pids controller). nil: no limit.
    public var pidsLimit: Int?
    /// How the root is made: an overlay of `rootLayers` and `upperDirectory` (the default), or, where
    /// overlayfs cannot be mounted, `rootLayers[0]` itself, a private copy of the stage's filesystem that
    /// the step changes in place (`upperDirectory` is then unused). Mountpoints the copy lacks are made in
    /// it for the step and removed afterwards, the directories around them keeping their times.
    public var root: RootMechanism = .overlay

    /// Fault injection for tests of the fallback: the overlay is mounted with an option the kernel
    /// refuses, so its mount fails in the child as it does where overlayfs is unavailable.
    public var failOverlayMount = false
    /// A descriptor that becomes readable when the step must stop (another stage of the build failed): the
    /// step is then killed as on a timeout and its result says `cancelled`. Only polled, never read.
    public var cancelDescriptor: Int32?

    public enum RootMechanism: Sendable, Equatable {
        case overlay
        case copy
    }

    /// How the pids limit is enforced: a pids cgroup when one can be had, else RLIMIT_NPROC (`.automatic`),
    /// or RLIMIT_NPROC only (`.processLimit`, also for tests of that path).
    public var pidsLimitMechanism: PidsLimitMechanism = .automatic

    public enum PidsLimitMechanism: Sendable, Equatable {
        case automatic
        case processLimit
    }

    public enum Network: Sendable, Equatable {
        /// A fresh network namespace with only loopback, brought up.
        case none
        /// The builder's network namespace (only when the plan says so, e.g. `RUN --network=host`).
        case host
    }

    public init(
        rootLayers: [String], upperDirectory: String, workDirectory: String, argv: [String],
        environment: [String] = [], uid: UInt32 = 0, gid: UInt32 = 0, groups: [UInt32] = [],
        workingDirectory: String = "/", hostname: String = "buildkitsandbox", network: Network = .none,
        mounts: [ExtraMount] = [], devPipes: String? = nil, timeoutSeconds: Int? = nil, pidsLimit: Int? = 4096
    ) {
        self.rootLayers = rootLayers
        self.upperDirectory = upperDirectory
        self.workDirectory = workDirectory
        self.argv = argv
        self.environment = environment
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.workingDirectory = workingDirectory
        self.hostname = hostname
        self.network = network
        self.mounts = mounts
        self.devPipes = devPipes
        self.timeoutSeconds = timeoutSeconds
        self.pidsLimit = pidsLimit
    }
}

/// A mount added to the step's root (RUN --mount). Targets are absolute paths inside the root; they may
/// not be under /proc or /dev, nor be /etc/hosts or /etc/resolv.conf.
public struct ExtraMount: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A fresh tmpfs (nosuid, nodev), with at most `sizeBytes`.
        case tmpfs(sizeBytes: Int)
        /// A host file or directory, read-only (secrets, read-only caches).
        case bindReadOnly(source: String)
        /// A host directory, writable (build caches). Changes go to the host directory, not the layer.
        case bind(source: String)
    }

    public var kind: Kind
    public var target: String

    public init(_ kind: Kind, target: String) {
        self.kind = kind
        self.target = target
    }

    /// A tmpfs at /dev/shm (BuildKit allows it, to size shared memory): it replaces the sandbox's own
    /// /dev/shm tmpfs instead of being mounted over the builder-made /dev.
    public var isDevShm: Bool {
        guard case .tmpfs = kind else { return false }
        return target.split(separator: "/").filter { $0 != "." } == ["dev", "shm"]
    }
}

extension SandboxPlan {
    /// The size of a `RUN --mount=type=tmpfs,target=/dev/shm` (the last one), if any.
    var devShmSize: Int? {
        for mount in mounts.reversed() where mount.isDevShm {
            if case .tmpfs(let size) = mount.kind { return size }
        }
        return nil
    }
}

/// How a step ended. A command that ran and failed is a result, not an error.
public struct SandboxResult: Sendable, Equatable {
    public enum Termination: Sendable, Equatable {
        case exited(Int32)
        case signaled(Int32)
    }

    public var termination: Termination
    /// The step ran past `timeoutSeconds` and was killed.
    public var timedOut: Bool
    /// A fork was refused by the pids limit at least once.
    public var pidsLimitReached: Bool
    /// Whether `pidsLimit` bound the step: false when no pids cgroup could be had and the step ran as the
    /// host's root, which the kernel exempts from RLIMIT_NPROC.
    public var pidsLimitEnforced = true
    /// From clone to the end of the PID namespace.
    public var duration: Duration
    /// The step was killed because `cancelDescriptor` became readable.
    public var cancelled = false

    public var succeeded: Bool { termination == .exited(0) && !timedOut && !cancelled }
}
