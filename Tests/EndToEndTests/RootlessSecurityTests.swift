import Foundation
import Hermetic
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Escape attempts run in RUN steps of builds started as `hermetic-rootless` (rootless mode: the builder
/// is uid 0 of a user namespace whose ids are the user's and its subordinate range). Each attempt's outcome
/// is recorded inside the step and checked line by line: every one must be refused (EPERM, a read-only
/// file system, a refused connection…) or land inside the step's own root, while the host (a canary file
/// owned by hermetic-rootless in the scratch directory above the context, the context itself, a TCP server
/// on the host's loopback, /etc/resolv.conf, the mount table) stays untouched. The first line of every probe
/// is the step's /proc/self/uid_map, which must be the nested map: the probes really ran rootless.
///
/// Same battery idea as `SecurityTests` (root builder), with real system calls made by a small static C
/// program (`probeSource`) where busybox has no applet.
@Suite(.serialized) struct RootlessSecurityTests {
    struct Probe: CustomStringConvertible, Sendable {
        var name: String
        /// Dockerfile lines run after the preamble (`FROM busybox AS probe`, `ARG SCRATCH`, `ARG PORT`, the
        /// `try` and `probe` tools in /bin, /observed made and the uid_map recorded). `$SCRATCH` is the
        /// scratch directory holding the canary and the context; `$PORT` the host's loopback server.
        var body: String
        /// The lines the steps must have written to /observed after the uid_map line. `{scratch}`, `{port}`,
        /// `{uidmap}` and `{gidmap}` are replaced by the run's values.
        var expected: [String]
        var description: String { name }
    }

    static let probes: [Probe] = [
        Probe(
            name: "the steps run in the nested user namespace, as root and as USER app",
            body: """
                RUN try gid_map cat /proc/self/gid_map
                RUN try id id
                RUN try caps grep -E '^Cap(Eff|Bnd)' /proc/self/status
                USER app
                RUN try app-uid_map cat /proc/self/uid_map
                RUN try app-id id
                """,
            expected: [
                "gid_map: {gidmap} [exit 0]",
                "id: uid=0(root) gid=0(root) groups=0(root) [exit 0]",
                "caps: CapEff:\t00000000a80425fb|CapBnd:\t00000000a80425fb [exit 0]",
                "app-uid_map: {uidmap} [exit 0]",
                "app-id: uid=1000(app) gid=1000(app) groups=50(staff),1000(app) [exit 0]",
            ]),
        Probe(
            name: "mount and the new mount API are refused",
            body: """
                RUN try mount mount -t tmpfs none /mnt
                RUN try mount-bind mount --bind / /mnt
                RUN probe mount fsopen open_tree >> /observed
                USER app
                RUN probe mount fsopen >> /observed
                """,
            expected: [
                "mount: mount: permission denied (are you root?) [exit 1]",
                "mount-bind: mount: permission denied (are you root?) [exit 1]",
                "mount: EPERM", "fsopen: EPERM", "open_tree: EPERM",
                "mount: EPERM", "fsopen: EPERM",
            ]),
        Probe(
            name: "unshare -U and -m, a new user namespace and setns are refused",
            body: """
                RUN try unshare-U unshare -U true
                RUN try unshare-m unshare -m true
                RUN try unshare-r unshare -r true
                RUN try nsenter nsenter -t 1 -m true
                RUN probe unshare-user unshare-mount clone-user setns >> /observed
                """,
            expected: [
                "unshare-U: unshare: unshare(0x10000000): Operation not permitted [exit 1]",
                "unshare-m: unshare: unshare(0x20000): Operation not permitted [exit 1]",
                "unshare-r: unshare: unshare(0x10000000): Operation not permitted [exit 1]",
                "nsenter: nsenter: setns(): can't reassociate to namespace 'mnt': Operation not permitted [exit 1]",
                "unshare-user: EPERM", "unshare-mount: EPERM", "clone-user: EPERM", "setns: EPERM",
            ]),
        Probe(
            name: "keyctl, add_key and bpf are refused",
            body: """
                RUN probe keyctl add_key bpf >> /observed
                """,
            expected: ["keyctl: EPERM", "add_key: EPERM", "bpf: EPERM"]),
        Probe(
            name: "another process of the step cannot be traced or read",
            body: """
                RUN probe ptrace-attach ptrace-seize process_vm_readv >> /observed
                USER app
                RUN probe ptrace-attach process_vm_readv >> /observed
                """,
            expected: [
                "ptrace-attach: EPERM", "ptrace-seize: EPERM", "process_vm_readv: EPERM",
                "ptrace-attach: EPERM", "process_vm_readv: EPERM",
            ]),
        Probe(
            name: "the clock cannot be set",
            body: """
                RUN probe clock_settime settimeofday >> /observed
                RUN try date-s sh -c 'date -s "$(date +%Y.%m.%d-%H:%M:%S)" > /dev/null'
                """,
            expected: [
                "clock_settime: EPERM", "settimeofday: EPERM",
                // busybox date reports the refusal and still exits 0.
                "date-s: date: can't set date: Operation not permitted [exit 0]",
            ]),
        Probe(
            name: "/proc/1/root is the step's own root, not the host's",
            body: """
                RUN try proc1-canary cat /proc/1/root$SCRATCH/canary
                RUN try proc1-secret cat /proc/1/root$SCRATCH/host-secret
                RUN try proc1-ls ls /proc/1/root$SCRATCH
                RUN try proc1-link readlink /proc/1/root
                RUN try proc1-os-release cat /proc/1/root/etc/os-release
                RUN try proc1-shadow cat /proc/1/root/etc/shadow
                RUN try host-path cat $SCRATCH/host-secret
                """,
            expected: [
                "proc1-canary: cat: can't open '/proc/1/root{scratch}/canary': No such file or directory [exit 1]",
                "proc1-secret: cat: can't open '/proc/1/root{scratch}/host-secret': No such file or directory [exit 1]",
                "proc1-ls: ls: /proc/1/root{scratch}: No such file or directory [exit 1]",
                "proc1-link: / [exit 0]",
                "proc1-os-release: NAME=\"Hermetic golden base\"|ID=golden [exit 0]",
                "proc1-shadow: cat: can't open '/proc/1/root/etc/shadow': No such file or directory [exit 1]",
                "host-path: cat: can't open '{scratch}/host-secret': No such file or directory [exit 1]",
            ]),
        Probe(
            name: "a host file owned by hermetic-rootless, above the context, cannot be written",
            body: """
                RUN try via-proc1 sh -c 'echo owned > /proc/1/root$SCRATCH/canary'
                RUN try via-path sh -c 'echo owned > $SCRATCH/canary'
                RUN try dotdot sh -c 'cd / && cd ../../.. && pwd -P'
                RUN --mount=type=bind,target=/ctx try ro-bind sh -c 'echo owned > /ctx/Dockerfile'
                RUN --mount=type=bind,target=/ctx try ro-bind-parent sh -c 'cd /ctx/.. && pwd -P'
                RUN --mount=type=bind,target=/ctx,rw try rw-bind sh -c 'echo owned > /ctx/Dockerfile && cat /ctx/Dockerfile'
                RUN --mount=type=cache,target=/cache try cache-parent sh -c 'echo owned > /cache/../canary && cd /cache/.. && pwd -P'
                RUN try in-root sh -c 'mkdir -p $SCRATCH && echo owned > $SCRATCH/canary && cat $SCRATCH/canary /canary'
                """,
            expected: [
                "via-proc1: sh: can't create /proc/1/root{scratch}/canary: nonexistent directory [exit 1]",
                "via-path: sh: can't create {scratch}/canary: nonexistent directory [exit 1]",
                "dotdot: / [exit 0]",
                "ro-bind: sh: can't create /ctx/Dockerfile: Read-only file system [exit 1]",
                "ro-bind-parent: / [exit 0]",
                "rw-bind: owned [exit 0]",
                "cache-parent: / [exit 0]",
                "in-root: owned|owned [exit 0]",
            ]),
        Probe(
            name: "a TCP server on the host's loopback is unreachable",
            body: """
                RUN try nc sh -c 'echo hello | nc 127.0.0.1 $PORT'
                RUN probe connect:$PORT >> /observed
                RUN try interfaces sh -c "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"
                """,
            expected: [
                "nc: nc: can't connect to remote host (127.0.0.1): Connection refused [exit 1]",
                "connect:{port}: ECONNREFUSED",
                "interfaces: lo [exit 0]",
            ]),
        // The image plants `/rootlink -> /`, `/up -> ../../../../..` and `/etc/resolv.conf -> the canary`
        // (from the context), then a step plants `/scratchlink -> $SCRATCH` and `/canarylink -> the canary`:
        // COPY, WORKDIR, the sandbox's resolv.conf and the step's own writes must all stay inside the root.
        Probe(
            name: "writes through image symlinks stay inside the root",
            body: """
                COPY links/ /
                COPY probe.txt /rootlink/probe-root.txt
                COPY probe.txt /up/probe-up.txt
                RUN try resolv-write sh -c 'echo nameserver 10.9.9.9 > /etc/resolv.conf'
                RUN try resolv-rm rm /etc/resolv.conf
                RUN try resolv-link readlink /etc/resolv.conf
                RUN try copied cat /probe-root.txt /probe-up.txt
                RUN ln -s $SCRATCH /scratchlink && ln -s $SCRATCH/canary /canarylink
                COPY probe.txt /scratchlink/copied-through-link
                COPY probe.txt /canarylink
                WORKDIR /scratchlink
                RUN try workdir pwd -P
                RUN try workdir-write sh -c 'echo owned >> canary && cat canary'
                RUN try through-link sh -c 'echo again >> /canarylink && cat $SCRATCH/canary'
                RUN try in-root ls $SCRATCH
                """,
            expected: [
                "resolv-write: sh: can't create /etc/resolv.conf: Read-only file system [exit 1]",
                "resolv-rm: rm: can't remove '/etc/resolv.conf': Device or resource busy [exit 1]",
                // The image's symlink is shadowed by the builder's read-only file: there is no link to read.
                "resolv-link:  [exit 1]",
                "copied: probe|probe [exit 0]",
                "workdir: {scratch} [exit 0]",
                "workdir-write: probe|owned [exit 0]",
                "through-link: probe|owned|again [exit 0]",
                "in-root: canary|copied-through-link [exit 0]",
            ]),
        Probe(
            name: "a setuid binary gives a non-root USER nothing",
            body: """
                RUN cp /bin/busybox /bin/busybox-suid && chmod 4755 /bin/busybox-suid
                RUN try suid-mode stat -c '%a %u' /bin/busybox-suid
                USER app
                RUN try suid-id /bin/busybox-suid id -u
                RUN try suid-touch /bin/busybox-suid touch /root/owned
                RUN try suid-caps /bin/busybox-suid grep -E '^Cap(Prm|Eff)' /proc/self/status
                RUN try suid-mount /bin/busybox-suid mount -t tmpfs none /tmp
                """,
            expected: [
                "suid-mode: 4755 0 [exit 0]",
                "suid-id: 1000 [exit 0]",
                "suid-touch: touch: /root/owned: Permission denied [exit 1]",
                "suid-caps: CapPrm:\t0000000000000000|CapEff:\t0000000000000000 [exit 0]",
                "suid-mount: mount: permission denied (are you root?) [exit 1]",
            ]),
        // Each write puts back the value read (harmless if it ever went through): what is checked is that
        // it is refused.
        Probe(
            name: "writes to /proc/sys are refused",
            body: """
                RUN try hostname sh -c 'echo probe > /proc/sys/kernel/hostname'
                RUN try core_pattern sh -c 'v=$(cat /proc/sys/kernel/core_pattern) && echo "$v" > /proc/sys/kernel/core_pattern'
                RUN try pid_max sh -c 'v=$(cat /proc/sys/kernel/pid_max) && echo "$v" > /proc/sys/kernel/pid_max'
                RUN try drop_caches sh -c 'echo 1 > /proc/sys/vm/drop_caches'
                RUN try remount mount -o remount,rw /proc/sys
                RUN try step-hostname hostname
                """,
            expected: [
                "hostname: sh: can't create /proc/sys/kernel/hostname: Read-only file system [exit 1]",
                "core_pattern: sh: can't create /proc/sys/kernel/core_pattern: Read-only file system [exit 1]",
                "pid_max: sh: can't create /proc/sys/kernel/pid_max: Read-only file system [exit 1]",
                "drop_caches: sh: can't create /proc/sys/vm/drop_caches: Read-only file system [exit 1]",
                "remount: mount: permission denied (are you root?) [exit 1]",
                "step-hostname: buildkitsandbox [exit 0]",
            ]),
        // Rootless only: root of the user namespace has CAP_MKNOD and CAP_CHOWN there, which must not open
        // a device or reach an id outside the map, and the maps are written once.
        Probe(
            name: "the user namespace's maps, devices and unmapped ids stay closed",
            body: """
                RUN try uid_map-write sh -c 'echo "0 0 1" > /proc/self/uid_map'
                RUN try setgroups-write sh -c 'echo deny > /proc/self/setgroups'
                RUN try mknod mknod /tmp/sda b 8 0
                RUN try chown-unmapped chown 70000 /tmp
                """,
            expected: [
                "uid_map-write: sh: write error: Operation not permitted [exit 1]",
                "setgroups-write: sh: can't create /proc/self/setgroups: Permission denied [exit 1]",
                "mknod: mknod: /tmp/sda: Operation not permitted [exit 1]",
                "chown-unmapped: chown: /tmp: Invalid argument [exit 1]",
            ]),
    ]

    @Test(arguments: probes)
    func probeIsRefused(probe: Probe) throws {
        let fixture = try Fixture()
        let server = try LoopbackServer()
        try server.checkReachableFromHost()
        let context = try fixture.makeContext(
            "ctx", dockerfile: Fixture.probeDockerfile(probe.body))
        let before = try HostState(fixture, context: context)
        let (outcome, _) = try fixture.build(
            context, output: "type=local,dest=\(fixture.path)/out",
            buildArguments: ["SCRATCH=\(fixture.path)", "PORT=\(server.port)"])
        try #require(outcome.status == 0, "\(outcome.standardError)")

        let observed = try String(contentsOfFile: fixture.path + "/out/observed", encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init).dropLast()
        for line in observed { print("[\(probe.name)] \(line)") }
        let expected = ["uid_map: {uidmap} [exit 0]"] + probe.expected
        #expect(Array(observed) == expected.map { fixture.substitute($0, port: server.port) })

        #expect(server.acceptedNothing(), "a step reached the host's loopback server")
        let after = try HostState(fixture, context: context)
        before.expectUnchanged(after, allowedNew: ["out", "state"])
        for stray in ["/probe-root.txt", "/probe-up.txt", "/rootlink", "/scratchlink", "/canarylink"] {
            #expect(!FileManager.default.fileExists(atPath: stray), "\(stray) appeared on the host")
        }
    }

    /// A program that forks until a fork is refused: the RLIMIT_NPROC set for the step binds uid 0 of the
    /// user namespace (it is not the host's root), the step fails with the probe's exit code long before
    /// the step timeout, and no process of the step outlives the build. The build runs in a pids cgroup the
    /// test made (no limit of its own) so the host's count of its tasks is exact.
    @Test func forkLoopIsStoppedByTheProcessLimit() throws {
        let fixture = try Fixture()
        let context = try fixture.makeContext("ctx", dockerfile: Self.forkLoopDockerfile)
        let before = try HostState(fixture, context: context)
        let watch = try WatchCgroup()
        let timeout = 60
        let (outcome, seconds) = try fixture.build(
            context, output: "type=local,dest=\(fixture.path)/out", timeout: timeout, cgroup: watch)
        let lines = outcome.standardError.split(separator: "\n").map(String.init)
        for line in lines where !line.hasPrefix("#") { print("[fork loop] \(line)") }
        let peak = watch.value("pids.peak")
        let left = watch.value("pids.current")
        print(
            "[fork loop] build ended after \(seconds) s (step timeout \(timeout) s); tasks: peak \(peak), left \(left)")
        #expect(outcome.status == 1)
        #expect(
            lines.last
                == "error: Dockerfile:3: RUN: process \"/bin/sh -c probe forks\" did not complete successfully: exit code: 3"
                + BuildxMessagesTests.offlineNote,
            "\(outcome.standardError)")
        let report = try #require(lines.first { $0.hasPrefix("forks: ") }, "\(outcome.standardError)")
        let fields = report.split(separator: " ")
        // forks: EAGAIN after N children (RLIMIT_NPROC L)
        try #require(fields.count == 7 && fields[1] == "EAGAIN" && fields[2] == "after", "\(report)")
        let children = try #require(Int(fields[3]), "\(report)")
        let limit = try #require(Int(fields[6].dropLast()), "\(report)")
        // The builder sets RLIMIT_NPROC to the processes its uid already has plus the step's pids limit (4096).
        #expect(limit > 4096 && limit <= 4096 + 64, "\(report)")
        #expect(children >= 4000 && children < limit, "\(report)")
        #expect(peak > children && peak <= limit + Self.outerBuilderTasks, "tasks in the build's cgroup: \(peak)")
        #expect(left == 0, "\(left) tasks of the build were left")
        #expect(seconds < Double(timeout) / 2, "the fork loop took \(seconds) s")
        #expect(!FileManager.default.fileExists(atPath: fixture.path + "/out"))
        let after = try HostState(fixture, context: context)
        before.expectUnchanged(after, allowedNew: ["state"])
    }

    /// The classic shell fork bomb, run as uid 0 of the user namespace: the build's tasks (counted exactly
    /// by a pids cgroup the test made, with no limit of its own) never exceed the step's RLIMIT_NPROC, forks
    /// are refused, the step fails, the build ends within the step timeout, and no task of it is left.
    @Test func forkBombIsContained() throws {
        let fixture = try Fixture()
        let context = try fixture.makeContext(
            "ctx",
            dockerfile: """
                FROM busybox
                RUN bomb() { bomb | bomb & }; bomb; sleep 60; echo the bomb ran for a minute
                """)
        let before = try HostState(fixture, context: context)
        let watch = try WatchCgroup()
        let timeout = 15
        let (outcome, seconds) = try fixture.build(
            context, output: "type=local,dest=\(fixture.path)/out", timeout: timeout, cgroup: watch)
        let peak = watch.value("pids.peak")
        let left = watch.value("pids.current")
        let lines = outcome.standardError.split(separator: "\n").map(String.init)
        let refusals = lines.filter { $0.contains("can't fork: Resource temporarily unavailable") }.count
        print("[fork bomb] last line: \(lines.last ?? "")")
        print(
            "[fork bomb] build ended after \(seconds) s (step timeout \(timeout) s); tasks: peak \(peak), left \(left); "
                + "\(refusals) lines with \"can't fork: Resource temporarily unavailable\"")
        #expect(outcome.status == 1)
        // The bomb's own output can leave a partial line before the error.
        let last = lines.last ?? ""
        #expect(
            last.contains(
                "error: Dockerfile:2: RUN: process \"/bin/sh -c bomb() { bomb | bomb & }; bomb; sleep 60; echo the bomb ran for a minute\" did not complete successfully: "
            )
                && (last.hasSuffix("killed by signal 9 (step timeout)" + BuildxMessagesTests.offlineNote)
                    || last.hasSuffix("exit code: 2" + BuildxMessagesTests.offlineNote)),
            "\(last)")
        #expect(seconds < Double(timeout + 10), "the build took \(seconds) s with a \(timeout) s step timeout")
        #expect(refusals > 0, "no fork was refused")
        // The step's RLIMIT_NPROC is 4096 plus the builder's processes; the outer builder's tasks are not in it.
        #expect(peak >= 3000 && peak <= 4096 + 64 + Self.outerBuilderTasks, "tasks in the build's cgroup: \(peak)")
        #expect(left == 0, "\(left) tasks of the build were left")
        #expect(!FileManager.default.fileExists(atPath: fixture.path + "/out"))
        let after = try HostState(fixture, context: context)
        before.expectUnchanged(after, allowedNew: ["state"])
    }

    /// Tasks the relaunching parent (`hermetic` outside the user namespace: its threads) may add to the
    /// build's cgroup beyond the step's limit.
    static let outerBuilderTasks = 64

    /// After failed steps (one that planted symlinks to the host's canary and its directory, then failed;
    /// the fork loop), a benign build in the same scratch and state directories gives the digest it gave
    /// before them.
    @Test func failedStepsLeaveTheNextBuildUnchanged() throws {
        let fixture = try Fixture()
        let benign = try fixture.makeContext(
            "ctx-benign",
            dockerfile: """
                FROM busybox
                RUN echo benign > /benign && mkdir -p /srv/data && echo x > /srv/data/x && chown -R 1000:1000 /srv
                COPY probe.txt /srv/
                """)
        let failing = try fixture.makeContext(
            "ctx-failing",
            dockerfile: """
                FROM busybox
                ARG SCRATCH
                RUN echo first > /first
                RUN ln -s $SCRATCH /scratch-dir && ln -s $SCRATCH/canary /canary-file && mkdir -p /deep/a && ln -s $SCRATCH /deep/a/b && ln -s / /deep/root && echo partial > /srv-partial && exit 7
                """)
        let forkLoop = try fixture.makeContext("ctx-forks", dockerfile: Self.forkLoopDockerfile)
        let before = try HostState(fixture, context: benign)

        func benignDigest(_ output: String) throws -> String {
            let (outcome, _) = try fixture.build(
                benign, output: "type=oci,dest=\(fixture.path)/\(output).oci",
                extra: ["--iidfile", "\(fixture.path)/\(output).iid"])
            try #require(outcome.status == 0, "\(outcome.standardError)")
            return try String(contentsOfFile: "\(fixture.path)/\(output).iid", encoding: .utf8)
        }
        let first = try benignDigest("first")
        let (failed, _) = try fixture.build(
            failing, output: "type=local,dest=\(fixture.path)/failed", buildArguments: ["SCRATCH=\(fixture.path)"])
        let failedLines = failed.standardError.split(separator: "\n")
        print("[failed step] \(failedLines.last ?? "")")
        #expect(failed.status == 1)
        #expect(failedLines.last?.hasPrefix("error: Dockerfile:4: RUN: process ") == true, "\(failed.standardError)")
        #expect(
            failedLines.last?.hasSuffix(
                "did not complete successfully: exit code: 7" + BuildxMessagesTests.offlineNote) == true,
            "\(failed.standardError)")
        let (forks, _) = try fixture.build(forkLoop, output: "type=local,dest=\(fixture.path)/forks")
        print("[fork loop] \(forks.standardError.split(separator: "\n").last ?? "")")
        #expect(forks.status == 1)
        #expect(
            forks.standardError.hasSuffix(
                "did not complete successfully: exit code: 3" + BuildxMessagesTests.offlineNote + "\n"))
        let second = try benignDigest("second")
        print("[digests] before the failed steps \(first), after \(second)")
        #expect(first.hasPrefix("sha256:"))
        #expect(second == first)
        #expect(!FileManager.default.fileExists(atPath: fixture.path + "/failed"))
        #expect(!FileManager.default.fileExists(atPath: fixture.path + "/forks"))
        let after = try HostState(fixture, context: benign)
        before.expectUnchanged(
            after, allowedNew: ["state", "first.oci", "first.iid", "second.oci", "second.iid"])
    }

    static let forkLoopDockerfile = """
        FROM busybox
        COPY --chmod=755 probe /bin/
        RUN probe forks
        """
}

extension RootlessSecurityTests {
    /// A scratch directory owned by hermetic-rootless (as a user's own build directory would be) with the
    /// canary, a "secret" the steps must not read, the probe tools, a busybox base image and contexts.
    struct Fixture {
        let account: RootlessTests.Account
        let scratch: TemporaryDirectory
        let baseDigest: Digest
        let setpriv: String
        /// `0 → uid, 1… → the subordinate range`, as /proc/self/uid_map prints it (and the same for gids).
        let uidMap: String
        let gidMap: String
        var path: String { scratch.path }
        var canary: String { path + "/canary" }
        static let canaryText = "untouched\n"

        init() throws {
            account = try RootlessTests.Account(RootlessTests.rootlessUser)
            setpriv = try ExternalTools.require("setpriv")
            uidMap = try Self.nestedMap("/etc/subuid", host: account.uid)
            gidMap = try Self.nestedMap("/etc/subgid", host: account.gid)
            scratch = try TemporaryDirectory(prefix: "rootless-security-")
            try Self.canaryText.write(toFile: scratch.path + "/canary", atomically: true, encoding: .utf8)
            try "host secret\n".write(toFile: scratch.path + "/host-secret", atomically: true, encoding: .utf8)
            try Self.tryScript.write(toFile: scratch.path + "/try", atomically: true, encoding: .utf8)
            try Self.compileProbe(into: scratch.path)
            baseDigest = try BaseImages.writeBusybox(at: scratch.path + "/busybox")
            try giveToUser()
            var info = stat()
            try #require(lstat(scratch.path + "/canary", &info) == 0 && info.st_uid == account.uid)
        }

        /// The scratch tree is the user's, as a user's own build directory would be (chown -R does not
        /// follow the links planted in it).
        func giveToUser() throws {
            let chown = try HermeticProcess.run("/bin/chown", ["-R", "\(account.uid):\(account.gid)", path])
            try #require(chown.status == 0, "\(chown.standardError)")
        }

        /// The map lines the kernel prints for the builder's namespace: `0 HOST 1` then `1 START COUNT` from
        /// the user's line of /etc/subuid or /etc/subgid, joined by `|` as the `try` tool does.
        static func nestedMap(_ file: String, host: UInt32) throws -> String {
            let text = try String(contentsOfFile: file, encoding: .utf8)
            let fields = try #require(
                text.split(separator: "\n").map { $0.split(separator: ":") }
                    .first { $0.count == 3 && $0[0] == Substring(RootlessTests.rootlessUser) },
                "\(RootlessTests.rootlessUser) has no range in \(file): scripts/install-deps makes it")
            let start = try #require(UInt32(fields[1]))
            let count = try #require(UInt32(fields[2]))
            return String(format: "%10u %10u %10u|%10u %10u %10u", 0, host, 1, 1, start, count)
        }

        static func probeDockerfile(_ body: String) -> String {
            """
            FROM busybox AS probe
            ARG SCRATCH
            ARG PORT
            COPY --chmod=755 try probe /bin/
            RUN : > /observed && chmod 666 /observed && try uid_map cat /proc/self/uid_map
            \(body)
            FROM scratch
            COPY --from=probe /observed /observed

            """
        }

        func substitute(_ line: String, port: UInt16) -> String {
            line.replacingOccurrences(of: "{scratch}", with: path)
                .replacingOccurrences(of: "{port}", with: String(port))
                .replacingOccurrences(of: "{uidmap}", with: uidMap)
                .replacingOccurrences(of: "{gidmap}", with: gidMap)
        }

        /// A context directory NAME under the scratch directory, with the Dockerfile, the tools, probe.txt and
        /// links/ (`rootlink -> /`, `up -> ../../../../..`, `etc/resolv.conf -> the canary`).
        func makeContext(_ name: String, dockerfile: String) throws -> String {
            let context = path + "/" + name
            let manager = FileManager.default
            try manager.createDirectory(atPath: context + "/links/etc", withIntermediateDirectories: true)
            try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            try "probe\n".write(toFile: context + "/probe.txt", atomically: true, encoding: .utf8)
            try manager.copyItem(atPath: path + "/try", toPath: context + "/try")
            try manager.copyItem(atPath: path + "/probe", toPath: context + "/probe")
            try manager.createSymbolicLink(atPath: context + "/links/rootlink", withDestinationPath: "/")
            try manager.createSymbolicLink(atPath: context + "/links/up", withDestinationPath: "../../../../..")
            try manager.createSymbolicLink(atPath: context + "/links/etc/resolv.conf", withDestinationPath: canary)
            return context
        }

        /// Runs `hermetic build` as hermetic-rootless (setpriv, no supplementary groups) with plain progress,
        /// so the steps' output is in standard error. Returns the outcome and the wall-clock seconds.
        func build(
            _ context: String, output: String, buildArguments: [String] = [], extra: [String] = [],
            timeout: Int = 60, cgroup: WatchCgroup? = nil
        ) throws -> (HermeticProcess.Outcome, Double) {
            try giveToUser()
            var arguments = [
                "build", context, "--progress", "plain", "--source-date-epoch", "1700000000",
                "--state-dir", path + "/state", "--step-timeout", String(timeout),
                "--build-context", "busybox=oci-layout://\(path)/busybox@\(baseDigest)", "-o", output,
            ]
            for argument in buildArguments { arguments += ["--build-arg", argument] }
            let environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": path, "TMPDIR": path]
            let start = ContinuousClock.now
            let command =
                [setpriv, "--reuid=\(account.uid)", "--regid=\(account.gid)", "--clear-groups", "--"]
                + [HermeticProcess.binaryPath] + arguments + extra
            // In a watching cgroup: a shell joins it, then becomes setpriv.
            let outcome =
                try cgroup.map {
                    try HermeticProcess.run(
                        "/bin/sh", ["-c", "echo $$ > \"$0\" && exec \"$@\"", $0.procsFile] + command,
                        environment: environment)
                }
                ?? HermeticProcess.run(command[0], Array(command.dropFirst()), environment: environment)
            let elapsed = ContinuousClock.now - start
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            return (outcome, seconds)
        }

        static func compileProbe(into directory: String) throws {
            let source = directory + "/probe.c"
            try probeSource.write(toFile: source, atomically: true, encoding: .utf8)
            try #require(
                FileManager.default.isExecutableFile(atPath: "/usr/bin/cc"),
                "/usr/bin/cc is missing: the probes' static C program cannot be built")
            let compiled = try HermeticProcess.run(
                "/usr/bin/cc", ["-static", "-O1", "-Wall", "-o", directory + "/probe", source])
            try #require(compiled.status == 0, "cc -static failed: \(compiled.standardError)")
        }

        /// `try LABEL COMMAND...`: runs COMMAND and appends `LABEL: its output [exit STATUS]` (output lines
        /// joined by `|`) to /observed. Always succeeds, so a refused attempt does not stop the build.
        static let tryScript = """
            #!/bin/sh
            label=$1
            shift
            output=$("$@" 2>&1)
            status=$?
            printf '%s: %s [exit %s]\\n' "$label" "$(printf '%s' "$output" | tr '\\n' '|')" "$status" >> /observed

            """
    }

    /// What a probe must leave as it was on the host.
    struct HostState {
        var canary: String?
        var canaryStatus: [Int]
        var scratchNames: Set<String>
        var contextFiles: [String: String]
        var resolvConf: String?
        var hostname: String?
        /// Mount points under the scratch directory, or /mnt, in the test's (the host's) mount namespace.
        var suspiciousMounts: [String]
        let scratch: String

        init(_ fixture: Fixture, context: String) throws {
            scratch = fixture.path
            canary = try? String(contentsOfFile: fixture.canary, encoding: .utf8)
            var info = stat()
            canaryStatus =
                lstat(fixture.canary, &info) == 0
                ? [
                    Int(info.st_ino), Int(info.st_uid), Int(info.st_gid), Int(info.st_mode), Int(info.st_size),
                    Int(info.st_mtim.tv_sec), Int(info.st_mtim.tv_nsec), Int(info.st_nlink),
                ] : []
            scratchNames = Set(try FileManager.default.contentsOfDirectory(atPath: fixture.path))
            contextFiles = [:]
            for name in ["Dockerfile", "probe.txt", "try"] {
                contextFiles[name] = try? String(contentsOfFile: context + "/" + name, encoding: .utf8)
            }
            resolvConf = try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)
            hostname = try? String(contentsOfFile: "/proc/sys/kernel/hostname", encoding: .utf8)
            let mountInfo = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
            suspiciousMounts = mountInfo.split(separator: "\n").compactMap { line in
                let fields = line.split(separator: " ")
                guard fields.count > 4 else { return nil }
                let point = String(fields[4])
                return point == "/mnt" || point.hasPrefix(fixture.path) ? point : nil
            }
        }

        func expectUnchanged(_ after: HostState, allowedNew: Set<String>) {
            #expect(after.canary == Fixture.canaryText, "the canary changed: \(after.canary ?? "(gone)")")
            #expect(after.canaryStatus == canaryStatus, "the canary's inode, owner, mode or times changed")
            #expect(
                after.scratchNames.subtracting(scratchNames).subtracting(allowedNew).isEmpty,
                "new in \(scratch): \(after.scratchNames.subtracting(scratchNames).subtracting(allowedNew).sorted())")
            #expect(
                scratchNames.subtracting(after.scratchNames).isEmpty,
                "gone from \(scratch): \(scratchNames.subtracting(after.scratchNames).sorted())")
            #expect(after.contextFiles == contextFiles, "the context changed")
            #expect(after.resolvConf == resolvConf, "the host's /etc/resolv.conf changed")
            #expect(after.hostname == hostname, "the host's hostname changed")
            #expect(after.suspiciousMounts == suspiciousMounts, "host mounts: \(after.suspiciousMounts)")
        }
    }

    /// A TCP server on the host's 127.0.0.1 (an ephemeral port); nothing ever accepts on it but the test.
    final class LoopbackServer {
        let descriptor: Int32
        let port: UInt16

        init() throws {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            try #require(fd >= 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            }
            descriptor = fd
            port = UInt16(bigEndian: address.sin_port)
            try #require(bound == 0 && listen(fd, 16) == 0 && port != 0)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }

        deinit { close(descriptor) }

        /// A connection from the host itself is accepted: the server works, so "nothing accepted" means
        /// something.
        func checkReachableFromHost() throws {
            let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            try #require(client >= 0)
            defer { close(client) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = port.bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            try #require(connected == 0, "cannot connect to the test's own server: \(errno)")
            var accepted: Int32 = -1
            for _ in 0..<100 where accepted < 0 {
                accepted = accept(descriptor, nil, nil)
                if accepted < 0 { usleep(10_000) }
            }
            try #require(accepted >= 0, "the test's own server accepted nothing")
            close(accepted)
        }

        func acceptedNothing() -> Bool {
            let accepted = accept(descriptor, nil, nil)
            if accepted >= 0 {
                close(accepted)
                return false
            }
            return errno == EAGAIN || errno == EWOULDBLOCK
        }
    }

    /// A pids cgroup made by the test (no limit: `pids.max` stays `max`) that a build is started in, so
    /// the host counts the build's tasks exactly: `pids.peak`, `pids.current`. The rootless builder cannot
    /// make cgroups under it (it is root's), so its steps still get RLIMIT_NPROC as they would without it.
    final class WatchCgroup {
        let directory: String
        var procsFile: String { directory + "/cgroup.procs" }

        init() throws {
            let name = "hermetic-rootless-probe-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            let v1 = "/sys/fs/cgroup/pids"
            let v2 = "/sys/fs/cgroup"
            if access(v1 + "/cgroup.procs", F_OK) == 0 {
                directory = v1 + "/" + name
            } else if let controllers = try? String(contentsOfFile: v2 + "/cgroup.subtree_control", encoding: .utf8),
                controllers.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("pids")
            {
                directory = v2 + "/" + name
            } else {
                throw ExternalTools.Failure(
                    description: "no pids cgroup to watch the build in (cgroup v1 pids, or v2 with pids delegated)")
            }
            try #require(mkdir(directory, 0o755) == 0, "mkdir \(directory): \(errno)")
            try #require(access(directory + "/pids.peak", R_OK) == 0, "\(directory) has no pids.peak")
        }

        func value(_ file: String) -> Int {
            let text = (try? String(contentsOfFile: directory + "/" + file, encoding: .utf8)) ?? ""
            return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }

        deinit {
            for _ in 0..<100 {
                if rmdir(directory) == 0 || errno == ENOENT { return }
                usleep(20_000)
            }
        }
    }
}

/// The static C program the probes run as /bin/probe: `probe NAME...` makes one real attempt per NAME and
/// prints `NAME: ERRNO` (`EPERM`, `ECONNREFUSED`…) or `NAME: succeeded`. `forks` forks waiting children
/// until a fork is refused, prints how many, and exits 3.
private let probeSource = #"""
    #define _GNU_SOURCE
    #include <arpa/inet.h>
    #include <errno.h>
    #include <fcntl.h>
    #include <linux/bpf.h>
    #include <netinet/in.h>
    #include <sched.h>
    #include <signal.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/mount.h>
    #include <sys/ptrace.h>
    #include <sys/resource.h>
    #include <sys/socket.h>
    #include <sys/syscall.h>
    #include <sys/time.h>
    #include <sys/uio.h>
    #include <sys/wait.h>
    #include <time.h>
    #include <unistd.h>

    static const char *errno_name(int e) {
        switch (e) {
        case EPERM: return "EPERM";
        case ENOENT: return "ENOENT";
        case ESRCH: return "ESRCH";
        case EBADF: return "EBADF";
        case EAGAIN: return "EAGAIN";
        case EACCES: return "EACCES";
        case EBUSY: return "EBUSY";
        case EINVAL: return "EINVAL";
        case EROFS: return "EROFS";
        case ENOSYS: return "ENOSYS";
        case ECONNREFUSED: return "ECONNREFUSED";
        case ENETUNREACH: return "ENETUNREACH";
        default: return "another errno";
        }
    }

    static void report(const char *name, long result) {
        if (result < 0) printf("%s: %s\n", name, errno_name(errno));
        else printf("%s: succeeded\n", name);
        fflush(stdout);
    }

    /* Another process of the step, to trace. */
    static pid_t sleeper(void) {
        pid_t pid = fork();
        if (pid == 0) {
            pause();
            _exit(0);
        }
        return pid;
    }

    static void reap(pid_t pid) {
        if (pid <= 0) return;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }

    static void probe(const char *name) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (!strcmp(name, "mount")) {
            report(name, mount("none", "/mnt", "tmpfs", 0, NULL));
        } else if (!strcmp(name, "fsopen")) {
            report(name, syscall(SYS_fsopen, "tmpfs", 0));
        } else if (!strcmp(name, "open_tree")) {
            report(name, syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */));
        } else if (!strcmp(name, "unshare-user")) {
            report(name, unshare(CLONE_NEWUSER));
        } else if (!strcmp(name, "unshare-mount")) {
            report(name, unshare(CLONE_NEWNS));
        } else if (!strcmp(name, "clone-user")) {
            long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
            if (pid == 0) _exit(0);
            report(name, pid);
            reap((pid_t)pid);
        } else if (!strcmp(name, "setns")) {
            int fd = open("/proc/1/ns/mnt", O_RDONLY | O_CLOEXEC);
            if (fd < 0) report("setns (opening /proc/1/ns/mnt)", -1);
            else report(name, setns(fd, CLONE_NEWNS));
        } else if (!strcmp(name, "keyctl")) {
            report(name, syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, "hermetic-probe"));
        } else if (!strcmp(name, "add_key")) {
            report(name, syscall(SYS_add_key, "user", "hermetic-probe", "value", 5, -3 /* session keyring */));
        } else if (!strcmp(name, "bpf")) {
            union bpf_attr attr;
            memset(&attr, 0, sizeof attr);
            attr.map_type = BPF_MAP_TYPE_ARRAY;
            attr.key_size = 4;
            attr.value_size = 4;
            attr.max_entries = 1;
            report(name, syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
        } else if (!strcmp(name, "ptrace-attach") || !strcmp(name, "ptrace-seize")) {
            pid_t child = sleeper();
            report(name, ptrace(name[7] == 'a' ? PTRACE_ATTACH : PTRACE_SEIZE, child, NULL, NULL));
            reap(child);
        } else if (!strcmp(name, "process_vm_readv")) {
            pid_t child = sleeper();
            char buffer[sizeof now];
            struct iovec local = {buffer, sizeof buffer}, remote = {&now, sizeof now};
            report(name, process_vm_readv(child, &local, 1, &remote, 1, 0));
            reap(child);
        } else if (!strcmp(name, "clock_settime")) {
            report(name, clock_settime(CLOCK_REALTIME, &now)); /* the current time: harmless if it worked */
        } else if (!strcmp(name, "settimeofday")) {
            struct timeval tv = {now.tv_sec, now.tv_nsec / 1000};
            report(name, settimeofday(&tv, NULL));
        } else if (!strncmp(name, "connect:", 8)) {
            struct sockaddr_in address;
            memset(&address, 0, sizeof address);
            address.sin_family = AF_INET;
            address.sin_port = htons((unsigned short)atoi(name + 8));
            address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            report(name, fd < 0 ? -1 : connect(fd, (struct sockaddr *)&address, sizeof address));
        } else if (!strcmp(name, "forks")) {
            struct rlimit limit;
            getrlimit(RLIMIT_NPROC, &limit);
            long count = 0;
            for (; count < 10000; count++) {
                pid_t pid = fork();
                if (pid == 0) {
                    pause();
                    _exit(0);
                }
                if (pid < 0) {
                    int saved = errno;
                    printf("forks: %s after %ld children (RLIMIT_NPROC %llu)\n", errno_name(saved), count,
                           (unsigned long long)limit.rlim_cur);
                    fflush(stdout);
                    exit(3);
                }
            }
            printf("forks: %ld children, none refused\n", count);
            fflush(stdout);
        } else {
            printf("%s: unknown probe\n", name);
            fflush(stdout);
        }
    }

    int main(int argc, char **argv) {
        for (int i = 1; i < argc; i++) probe(argv[i]);
        return 0;
    }
    """#
