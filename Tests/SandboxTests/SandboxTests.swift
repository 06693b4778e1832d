import Foundation
import Testing

@testable import Sandbox

@Suite("Sandbox", .serialized)
struct SandboxTests {
    @Test("a write lands in the upper dir only; no mountpoint stubs or builder files leak into it")
    func writeGoesToUpper() throws {
        let fixture = try SandboxFixture()
        let output = try fixture.run(fixture.shell("echo made > /created && cat /etc/hosts"))
        #expect(output.result.succeeded, "stderr: \(output.stderr)")
        #expect(output.stdout.contains("sandbox-test"))
        #expect(fixture.upperEntries() == ["created"])
        #expect(try String(contentsOfFile: fixture.upper + "/created", encoding: .utf8) == "made\n")
        #expect(!FileManager.default.fileExists(atPath: fixture.lower + "/created"))
        #expect(!FileManager.default.fileExists(atPath: fixture.work + "/hermetic-sandbox"))
    }

    @Test("a deletion becomes an overlay whiteout (char 0/0) in upper; the lower is untouched")
    func deletionIsWhiteout() throws {
        let fixture = try SandboxFixture()
        let output = try fixture.run(fixture.shell("rm /bin/cat"))
        #expect(output.result.succeeded, "stderr: \(output.stderr)")
        var info = stat()
        #expect(lstat(fixture.upper + "/bin/cat", &info) == 0)
        #expect(info.st_mode & S_IFMT == S_IFCHR && info.st_rdev == 0)
        #expect(lstat(fixture.lower + "/bin/cat", &info) == 0 && info.st_mode & S_IFMT == S_IFLNK)
    }

    @Test("environment, hostname, uid/gid/groups are exactly the plan's")
    func identity() throws {
        let fixture = try SandboxFixture()
        let env = try fixture.run(fixture.plan(["env"], environment: ["PATH=/bin", "FOO=bar baz"]))
        #expect(env.result.succeeded, "stderr: \(env.stderr)")
        #expect(env.stdout.split(separator: "\n").sorted() == ["FOO=bar baz", "PATH=/bin"])

        let name = try fixture.run(fixture.plan(["hostname"]))
        #expect(name.stdout == "sandbox-test\n")

        var plan = fixture.shell("id -u; id -g; id -G; cat /proc/self/status")
        plan.uid = 1000
        plan.gid = 1000
        plan.groups = [27, 100]
        let id = try fixture.run(plan)
        #expect(id.result.succeeded, "stderr: \(id.stderr)")
        let lines = id.stdout.split(separator: "\n").map(String.init)
        #expect(Array(lines.prefix(3)) == ["1000", "1000", "1000 27 100"])
        #expect(lines.contains("CapEff:\t0000000000000000"))
        #expect(lines.contains("NoNewPrivs:\t1"))
        #expect(lines.contains("Seccomp:\t2"))
    }

    @Test("root keeps exactly Docker's default capabilities, none ambient or inheritable")
    func rootCapabilities() throws {
        let fixture = try SandboxFixture()
        let output = try fixture.run(fixture.shell("grep -E '^(Cap|NoNewPrivs)' /proc/self/status"))
        let expected = String(format: "%016llx", Sandbox.dockerDefaultCapabilities)
        let lines = output.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("CapEff:\t\(expected)"))
        #expect(lines.contains("CapBnd:\t\(expected)"))
        #expect(lines.contains("CapInh:\t0000000000000000"))
        #expect(lines.contains("CapAmb:\t0000000000000000"))
    }

    @Test("network: only loopback; a server on the host's 127.0.0.1 is unreachable")
    func networkIsolated() throws {
        let fixture = try SandboxFixture()
        let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(server >= 0)
        defer { close(server) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        try #require(bound == 0 && listen(server, 8) == 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(server, $0, &length) }
        }
        let port = UInt16(bigEndian: address.sin_port)
        let output = try fixture.run(
            fixture.shell(
                "cat /sys/class/net/lo/operstate 2>/dev/null; ls /proc/net >/dev/null; "
                    + "if echo x | nc 127.0.0.1 \(port); then echo connected; else echo refused; fi; cat /proc/net/dev")
        )
        #expect(output.stdout.contains("refused"), "stdout: \(output.stdout) stderr: \(output.stderr)")
        #expect(!output.stdout.contains("connected"))
        // Only lo exists in the step's network namespace.
        let interfaces = output.stdout.split(separator: "\n").filter { $0.contains(":") && $0.contains("|") == false }
            .compactMap { $0.split(separator: ":").first?.trimmingCharacters(in: .whitespaces) }
        #expect(interfaces == ["lo"], "interfaces: \(interfaces)")
    }

    @Test("/proc/1/root and host paths do not reach the host; the canary stays unreadable and unchanged")
    func hostNotReachable() throws {
        let fixture = try SandboxFixture()
        let output = try fixture.run(
            fixture.shell("cat /proc/1/root\(fixture.canary) \(fixture.canary); echo x > \(fixture.canary); exit 0"))
        #expect(!output.stdout.contains(fixture.canaryText))
        #expect(fixture.canaryIntact())
    }

    @Test("a file descriptor leaked by the builder is not inherited")
    func leakedDescriptorClosed() throws {
        let fixture = try SandboxFixture()
        let leaked = open(fixture.canary, O_RDONLY)  // deliberately without O_CLOEXEC
        try #require(leaked >= 0)
        let high = fcntl(leaked, F_DUPFD, 50)
        defer {
            close(leaked)
            close(high)
        }
        let output = try fixture.run(
            fixture.shell("ls /proc/self/fd/; cat /proc/self/fd/\(leaked) /proc/self/fd/\(high) 2>/dev/null; true"))
        let descriptors = output.stdout.split(separator: "\n").compactMap { Int($0) }.filter { $0 > 2 }
        // Only ls's own directory descriptor may appear above 2.
        #expect(descriptors.count <= 1, "descriptors: \(descriptors)")
        #expect(!descriptors.contains(Int(high)))
        #expect(!output.stdout.contains(fixture.canaryText))
    }

    @Test("working directory: /proc/self/fd/N is refused; symlinks resolve inside the root")
    func workingDirectory() throws {
        let fixture = try SandboxFixture()
        var plan = fixture.plan(["pwd"])
        plan.workingDirectory = "/proc/self/fd/3"
        do {
            _ = try fixture.run(plan)
            Issue.record("a /proc/self/fd working directory was accepted")
        } catch let error as SandboxError {
            guard case .childSetup(let step, _, let path, _) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(step == "working directory")
            #expect(path == "/proc/self/fd/3")
            #expect(error.description.contains("/proc/self/fd/3"))
        }
        try FileManager.default.createSymbolicLink(
            atPath: fixture.lower + "/escape", withDestinationPath: "../../../../../../etc")
        plan.workingDirectory = "/escape"
        let output = try fixture.run(plan)
        #expect(output.stdout == "/etc\n")
    }

    @Test("a fork bomb is stopped by the pids limit and the step fails")
    func forkBomb() throws {
        let fixture = try SandboxFixture()
        var plan = fixture.shell("while true; do sleep 1000 & done")
        plan.pidsLimit = 32
        plan.timeoutSeconds = 4
        let output = try fixture.run(plan)
        #expect(!output.result.succeeded)
        #expect(output.result.pidsLimitReached)
        #expect(fixture.canaryIntact())
        #expect(try hostProcesses(containing: "sleep 1000").isEmpty)
    }

    @Test("without a pids cgroup, RLIMIT_NPROC limits a non-root step's processes")
    func processLimitFallback() throws {
        func attempt(limit: Int) throws -> SandboxFixture.Output {
            let fixture = try SandboxFixture()
            var plan = fixture.shell(
                "i=0; while [ $i -lt 40 ]; do sleep 1000 & i=$((i+1)); done; echo started $i; kill $(jobs -p)")
            plan.uid = 4242
            plan.gid = 4242
            plan.pidsLimit = limit
            plan.pidsLimitMechanism = .processLimit
            plan.timeoutSeconds = 20
            return try fixture.run(plan)
        }
        let small = try attempt(limit: 16)
        #expect(!small.result.succeeded && small.stderr.contains("can't fork"), "\(small.stdout) \(small.stderr)")
        #expect(small.result.pidsLimitEnforced)
        let large = try attempt(limit: 200)
        #expect(large.stdout.contains("started 40"), "\(large.stdout) \(large.stderr)")
        #expect(try hostProcesses(containing: "sleep 1000").isEmpty)
    }

    @Test("a root step with only RLIMIT_NPROC is reported as not limited; with a cgroup it is")
    func rootWithoutPidsCgroupIsNotLimited() throws {
        let fixture = try SandboxFixture()
        var plan = fixture.shell("true")
        plan.pidsLimit = 16
        plan.pidsLimitMechanism = .processLimit
        #expect(try fixture.run(plan).result.pidsLimitEnforced == false)
        plan.pidsLimitMechanism = .automatic
        #expect(try fixture.run(plan).result.pidsLimitEnforced == true)
    }

    @Test("timeout kills the step and every process in its PID namespace")
    func timeoutKillsAll() throws {
        let fixture = try SandboxFixture()
        var plan = fixture.shell("sleep 987654 & sleep 987655")
        plan.timeoutSeconds = 1
        let output = try fixture.run(plan)
        #expect(output.result.timedOut)
        #expect(output.result.termination == .signaled(SIGKILL))
        #expect(output.result.duration < .seconds(5))
        #expect(try hostProcesses(containing: "98765").isEmpty)
    }

    @Test("a failed step leaves the host and the lower layer unchanged")
    func failedStepKeepsHost() throws {
        let fixture = try SandboxFixture()
        let output = try fixture.run(fixture.shell("rm -rf /bin /etc; echo x > \(fixture.canary); exit 3"))
        #expect(output.result.termination == .exited(3))
        #expect(!output.result.succeeded)
        #expect(fixture.canaryIntact())
        #expect(FileManager.default.isExecutableFile(atPath: fixture.lower + "/bin/busybox"))
        #expect(FileManager.default.fileExists(atPath: fixture.lower + "/etc/passwd"))
    }

    @Test("image symlinks at mountpoints: a symlinked /etc/hosts is replaced, a symlinked parent refused")
    func symlinkMountpoints() throws {
        let fixture = try SandboxFixture()
        try FileManager.default.createSymbolicLink(
            atPath: fixture.lower + "/etc/hosts", withDestinationPath: fixture.canary)
        let output = try fixture.run(fixture.shell("cat /etc/hosts; echo y > /etc/hosts; true"))
        #expect(output.stdout.contains("localhost"))
        #expect(!output.stdout.contains(fixture.canaryText))
        #expect(fixture.canaryIntact())

        try FileManager.default.createSymbolicLink(atPath: fixture.lower + "/cache", withDestinationPath: fixture.base)
        var plan = fixture.shell("true")
        plan.mounts = [ExtraMount(.tmpfs(sizeBytes: 1 << 20), target: "/cache/x")]
        #expect(throws: SandboxError.unsafeMountpoint(path: "/cache/x", reason: "/cache is a symlink in the image")) {
            try fixture.run(plan)
        }
        #expect(!FileManager.default.fileExists(atPath: fixture.base + "/x"))
    }

    @Test("extra mounts: tmpfs and read-only bind of a host file")
    func extraMounts() throws {
        let fixture = try SandboxFixture()
        var plan = fixture.shell(
            "cat /run/secrets/token; echo z > /run/secrets/token; echo t > /scratch/f; cat /scratch/f")
        plan.mounts = [
            ExtraMount(.bindReadOnly(source: fixture.canary), target: "/run/secrets/token"),
            ExtraMount(.tmpfs(sizeBytes: 1 << 20), target: "/scratch"),
        ]
        let output = try fixture.run(plan)
        #expect(output.stdout == fixture.canaryText + "t\n", "stderr: \(output.stderr)")
        #expect(fixture.canaryIntact())
        #expect(fixture.upperEntries().isEmpty, "upper: \(fixture.upperEntries())")
    }

    @Test("devPipes: a builder directory at /dev/pipes, read-only, runnable, absent from the upper dir")
    func devPipes() throws {
        let fixture = try SandboxFixture()
        let pipes = fixture.base + "/pipes"
        try FileManager.default.createDirectory(atPath: pipes, withIntermediateDirectories: false)
        try "#!/bin/sh\necho from-pipe\n".write(toFile: pipes + "/EOF", atomically: false, encoding: .utf8)
        chmod(pipes + "/EOF", 0o755)
        var plan = fixture.shell("/dev/pipes/EOF; echo x > /dev/pipes/EOF || echo refused")
        plan.devPipes = pipes
        let output = try fixture.run(plan)
        #expect(output.stdout == "from-pipe\nrefused\n", "stderr: \(output.stderr)")
        #expect(fixture.upperEntries().isEmpty, "upper: \(fixture.upperEntries())")
    }

    @Test("mount and unshare fail in busybox; /dev has exactly the builder's devices")
    func shellProbes() throws {
        let fixture = try SandboxFixture()
        let output = try fixture.run(
            fixture.shell(
                "mount -t tmpfs none /tmp && echo MOUNTED; unshare -n true && echo UNSHARED; "
                    + "ls /dev; echo hi > /dev/null && head -c 4 /dev/zero | wc -c"))
        #expect(!output.stdout.contains("MOUNTED"))
        #expect(!output.stdout.contains("UNSHARED"))
        let devices = Set(output.stdout.split(separator: "\n").map(String.init))
        for device in ["null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd"] {
            #expect(devices.contains(device), "missing /dev/\(device)")
        }
        #expect(devices.contains("4"))
    }

    @Test("refused system calls answer EPERM (clone3: ENOSYS); ordinary ones still work")
    func syscallProbe() throws {
        let fixture = try SandboxFixture()
        try fixture.installProbe(source: probeSource)
        let output = try fixture.run(fixture.plan(["/probe"]))
        #expect(output.result.succeeded, "stderr: \(output.stderr)")
        var results: [String: Int] = [:]
        for line in output.stdout.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 2, let code = Int(fields[1]) { results[String(fields[0])] = code }
        }
        let eperm = [
            "mount", "umount2", "pivot_root", "fsopen", "fsmount", "move_mount", "open_tree", "fspick", "mount_setattr",
            "unshare", "setns", "clone_newuser", "clone_newns", "ptrace", "keyctl", "add_key", "request_key", "bpf",
            "perf_event_open", "kexec_load", "init_module", "delete_module", "reboot", "swapon", "clock_settime",
            "settimeofday", "adjtimex", "open_by_handle_at", "userfaultfd", "io_uring_setup", "socket_alg",
            "socket_vsock", "tiocsti", "tiocsti_high_bits", "tioclinux", "i386_socketcall_vsock",
            "i386_socketcall_inet", "i386_socket_vsock", "i386_socket_alg",
        ]
        for name in eperm {
            #expect(results[name] == Int(EPERM), "\(name): \(results[name].map(String.init) ?? "missing")")
        }
        #expect(results["clone3"] == Int(ENOSYS))
        #expect(results["socket_inet"] == 0)
        #expect(results["fork"] == 0)
        // The other ABIs are filtered too: mount through int 0x80 (i386) and the x32 syscall bit.
        #expect(results["i386_mount"] == Int(EPERM))
        #expect(results["x32_mount"] == Int(EPERM))
        #expect(results["i386_getpid"] == 0)
        // The 32-bit ABI: socketcall, whose family no filter can read, is refused; the direct call is
        // filtered by family like the native one.
        #expect(results["i386_socket_inet"] == 0)
        #expect(results["i386_socket_unix"] == 0)
        #expect(results["tiocgwinsz_allowed"] == 0)
    }

    @Test("a child-side failure is a typed error naming the step and path")
    func childFailureIsTyped() throws {
        let fixture = try SandboxFixture()
        #expect(
            throws: SandboxError.childSetup(step: "execve", opIndex: nil, path: "no-such-command", errno: ENOENT)
        ) {
            try fixture.run(fixture.plan(["no-such-command"]))
        }
        try FileManager.default.removeItem(atPath: fixture.lower + "/etc")
        try "not a directory".write(toFile: fixture.lower + "/etc", atomically: false, encoding: .utf8)
        #expect(
            throws: SandboxError.unsafeMountpoint(path: "/etc/hosts", reason: "/etc is not a directory in the image")
        ) {
            try fixture.run(fixture.plan(["true"]))
        }
        #expect(fixture.upperEntries().isEmpty)
    }

    @Test("measured: step start-up latency")
    func startupLatency() throws {
        let fixture = try SandboxFixture()
        var durations: [Duration] = []
        for _ in 0..<5 {
            let output = try fixture.run(fixture.plan(["/bin/true"]))
            #expect(output.result.succeeded)
            durations.append(output.result.duration)
        }
        let clock = ContinuousClock()
        let start = clock.now
        let program = try SeccompPolicy.compile()
        let compileTime = clock.now - start
        let total = durations.reduce(Duration.zero, +)
        print(
            "sandbox start-to-exit of /bin/true: mean \(total / durations.count), min \(durations.min()!); seccomp compile \(compileTime), \(program.bytes.count / 8) BPF instructions"
        )
        #expect(total / durations.count < .seconds(2))
    }
}

@Suite("Private hostname")
struct PrivateHostnameTests {
    @Test("a process spawned after enterPrivateHostname sees that name; the host's is unchanged")
    func spawnedProcessSeesThePrivateHostname() throws {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        let hostBefore = String(cString: buffer)
        // On a thread of its own: the namespace stays with the thread that entered it.
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var seen = ""
        nonisolated(unsafe) var failure: (any Error)?
        let thread = Thread {
            do {
                try Sandbox.enterPrivateHostname("rebuild-probe")
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/bin/uname")
                process.arguments = ["-n"]
                let pipe = Pipe()
                process.standardOutput = pipe
                try process.run()
                seen = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                process.waitUntilExit()
            } catch {
                failure = error
            }
            done.signal()
        }
        thread.start()
        done.wait()
        #expect(failure == nil, "\(String(describing: failure))")
        #expect(seen == "rebuild-probe\n")
        gethostname(&buffer, buffer.count)
        #expect(String(cString: buffer) == hostBefore)
    }
}

@Suite("SeccompPolicy")
struct SeccompPolicyTests {
    @Test("refused calls are not allowed; no duplicates; the rendering is stable")
    func policyShape() {
        let allowed = Set(SeccompPolicy.allowedSyscalls)
        #expect(allowed.count == SeccompPolicy.allowedSyscalls.count)
        #expect(allowed.isDisjoint(with: SeccompPolicy.refusedSyscalls))
        let conditional = Set(SeccompPolicy.conditionalRules.map(\.syscall))
        #expect(conditional.isDisjoint(with: SeccompPolicy.refusedSyscalls))
        #expect(conditional.isDisjoint(with: allowed))
        let text = SeccompPolicy.canonicalText
        #expect(text == SeccompPolicy.canonicalText)
        #expect(text.hasPrefix("hermetic-seccomp-policy 3\ndefault errno 1\narch x86_64\narch x86\narch x32\n"))
        #expect(text.contains("rule clone allow arg0&0x7e020080==0x0\n"))
        #expect(text.contains("rule clone3 errno 38\n"))
        #expect(text.hasSuffix("x86 exclude socket\nx86 direct socket 359 allow families 1,2,10,16,17\n"))
    }

    @Test("ioctl: exactly the refused requests fail, on their low 32 bits")
    func ioctlRulesRefuseExactlyTheRefusedRequests() {
        let rules = SeccompPolicy.ioctlRules()
        func allowed(_ request: UInt64) -> Bool {
            rules.contains { rule in rule.conditions.allSatisfy { request & $0.mask == $0.value } }
        }
        for refused in SeccompPolicy.refusedIoctls {
            #expect(!allowed(refused) && !allowed(refused | 0x1_0000_0000))
        }
        for request: UInt64 in [0, 0x5401, 0x5410, 0x5413, 0x541B, 0x541D, 0x5414, 0xC008_5412, 0x8004_541C] {
            #expect(allowed(request), "0x\(String(request, radix: 16))")
        }
    }

    @Test("compiles to a BPF program; names unknown to libseccomp are reported")
    func compiles() throws {
        let program = try SeccompPolicy.compile()
        #expect(program.bytes.count > 100 * 8)
        #expect(program.bytes.count % 8 == 0)
        #expect(try SeccompPolicy.compile() == program)
        print(
            "seccomp: \(program.bytes.count / 8) instructions; unknown to this libseccomp: \(program.unknownSyscalls)")
    }
}

/// Host processes whose command line contains `marker`.
func hostProcesses(containing marker: String) throws -> [Int] {
    let entries = try FileManager.default.contentsOfDirectory(atPath: "/proc")
    return entries.compactMap(Int.init).filter { pid in
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let text = String(decoding: data.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
        return text.contains(marker) && !text.contains("swift")
    }
}
