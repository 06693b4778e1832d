internal import CSandbox
internal import CSeccomp

#if canImport(Glibc)
    import Glibc
#endif

/// A compiled filter: the `struct sock_filter` array (8 bytes per instruction) for x86_64 with the x86
/// and x32 ABIs, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
public struct SeccompProgram: Sendable, Equatable {
    public var bytes: [UInt8]
    /// Allowed names the installed libseccomp does not know (newer than it); they stay refused.
    public var unknownSyscalls: [String]
}

/// Owns a libseccomp filter context (until `seccomp_merge` takes it over).
private final class SeccompContext {
    let handle: scmp_filter_ctx
    var owned = true

    init(defaultAction: UInt32) throws(SandboxError) {
        guard let handle = seccomp_init(defaultAction) else {
            throw SandboxError.seccomp(call: "seccomp_init", syscall: nil, code: -ENOMEM)
        }
        self.handle = handle
    }

    deinit { if owned { seccomp_release(handle) } }
}

extension SeccompPolicy {
    /// Compiles the policy with libseccomp and exports the BPF program. Done in the builder before the
    /// child is cloned, so the child only has to load bytes.
    ///
    /// Two filters, merged: x86_64 and x32 get every rule; the 32-bit x86 ABI gets every rule but the
    /// `socket` ones. libseccomp (2.5) knows x86's socket calls only through the `socketcall` multiplexer,
    /// whose arguments sit in memory where no filter can read them, so a `socket` rule there would allow
    /// `socketcall(SYS_SOCKET, AF_VSOCK…)` whatever its family. Without one, 32-bit programs cannot create
    /// sockets; every other socket call (on descriptors they already have) works.
    public static func compile() throws(SandboxError) -> SeccompProgram {
        let context = try SeccompContext(defaultAction: errnoAction(defaultErrno))
        let legacy = try SeccompContext(defaultAction: errnoAction(defaultErrno))
        for arch in architectures where arch != "x86_64" {
            let token = seccomp_arch_resolve_name(arch)
            guard token != 0 else {
                throw SandboxError.seccomp(call: "seccomp_arch_resolve_name(\(arch))", syscall: nil, code: -EINVAL)
            }
            let target = arch == "x86" ? legacy : context
            let result = seccomp_arch_add(target.handle, token)
            if result != 0 && result != -EEXIST {
                throw SandboxError.seccomp(call: "seccomp_arch_add(\(arch))", syscall: nil, code: result)
            }
        }
        let removed = seccomp_arch_remove(legacy.handle, UInt32(SCMP_ARCH_NATIVE))
        guard removed == 0 else {
            throw SandboxError.seccomp(call: "seccomp_arch_remove(native)", syscall: nil, code: removed)
        }
        var unknown: [String] = []
        let rules =
            allowedSyscalls.map { SeccompRule(syscall: $0, action: .allow, conditions: []) } + conditionalRules
        for rule in rules {
            let number = seccomp_syscall_resolve_name(rule.syscall)
            if number == __NR_SCMP_ERROR {
                unknown.append(rule.syscall)
                continue
            }
            let action: UInt32
            switch rule.action {
            case .allow: action = SCMP_ACT_ALLOW
            case .errno(let code): action = errnoAction(code)
            }
            let comparisons = rule.conditions.map {
                scmp_arg_cmp(
                    arg: $0.argument, op: $0.mask == .max ? SCMP_CMP_EQ : SCMP_CMP_MASKED_EQ,
                    datum_a: $0.mask == .max ? $0.value : $0.mask, datum_b: $0.mask == .max ? 0 : $0.value)
            }
            let result = comparisons.withUnsafeBufferPointer {
                seccomp_rule_add_array(context.handle, action, number, UInt32($0.count), $0.baseAddress)
            }
            if result != 0 {
                throw SandboxError.seccomp(call: "seccomp_rule_add", syscall: rule.syscall, code: result)
            }
            if !x86ExcludedSyscalls.contains(rule.syscall) {
                let legacyResult = comparisons.withUnsafeBufferPointer {
                    seccomp_rule_add_array(legacy.handle, action, number, UInt32($0.count), $0.baseAddress)
                }
                if legacyResult != 0 {
                    throw SandboxError.seccomp(call: "seccomp_rule_add(x86)", syscall: rule.syscall, code: legacyResult)
                }
            }
        }
        let merged = seccomp_merge(context.handle, legacy.handle)
        guard merged == 0 else { throw SandboxError.seccomp(call: "seccomp_merge", syscall: nil, code: merged) }
        legacy.owned = false
        return SeccompProgram(bytes: x86DirectSocketPrefix() + (try export(context)), unknownSyscalls: unknown)
    }

    /// Hand-written BPF run before libseccomp's program: the 32-bit x86 ABI's direct `socket` call (359),
    /// which libseccomp 2.5 does not know by that number, is allowed for `socketFamilies` and refused for
    /// every other family. Everything else falls through to libseccomp's program, which begins by loading
    /// the architecture itself, so the accumulator's value on entry does not matter.
    static func x86DirectSocketPrefix() -> [UInt8] {
        let load: UInt16 = 0x20  // BPF_LD | BPF_W | BPF_ABS
        let jumpIfEqual: UInt16 = 0x15  // BPF_JMP | BPF_JEQ | BPF_K
        let returnValue: UInt16 = 0x06  // BPF_RET | BPF_K
        let families = socketFamilies.map { UInt32(truncatingIfNeeded: $0) }
        // 0 ld arch · 1 jeq i386 · 2 ld nr · 3 jeq 359 · 4 ld args[0] · families… · refuse · allow · (libseccomp)
        let allowIndex = 5 + families.count + 1
        let end = allowIndex + 1
        var program: [(UInt16, UInt8, UInt8, UInt32)] = [
            (load, 0, 0, 4),
            (jumpIfEqual, 0, UInt8(end - 2), 0x4000_0003),  // AUDIT_ARCH_I386
            (load, 0, 0, 0),
            (jumpIfEqual, 0, UInt8(end - 4), x86SocketSyscall),
            (load, 0, 0, 16),  // low 32 bits of args[0] (the 32-bit ABI has no high ones)
        ]
        for (offset, family) in families.enumerated() {
            program.append((jumpIfEqual, UInt8(allowIndex - (5 + offset) - 1), 0, family))
        }
        program.append((returnValue, 0, 0, errnoAction(defaultErrno)))
        program.append((returnValue, 0, 0, SCMP_ACT_ALLOW))
        var bytes: [UInt8] = []
        for (code, jumpTrue, jumpFalse, value) in program {
            bytes += [UInt8(code & 0xff), UInt8(code >> 8), jumpTrue, jumpFalse]
            bytes += (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
        }
        return bytes
    }

    private static func errnoAction(_ code: Int32) -> UInt32 {
        0x0005_0000 | (UInt32(bitPattern: code) & 0xffff)
    }

    private static func export(_ context: SeccompContext) throws(SandboxError) -> [UInt8] {
        let fd = hermetic_memfd_create("hermetic-seccomp")
        guard fd >= 0 else { throw SandboxError.seccomp(call: "memfd_create", syscall: nil, code: -errno) }
        defer { close(fd) }
        let result = seccomp_export_bpf(context.handle, fd)
        guard result == 0 else { throw SandboxError.seccomp(call: "seccomp_export_bpf", syscall: nil, code: result) }
        let size = lseek(fd, 0, SEEK_END)
        guard size > 0, size % 8 == 0, size <= 1 << 20, lseek(fd, 0, SEEK_SET) == 0 else {
            throw SandboxError.seccomp(call: "seccomp_export_bpf", syscall: nil, code: -EINVAL)
        }
        var bytes = [UInt8](repeating: 0, count: Int(size))
        var filled = 0
        while filled < bytes.count {
            let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw SandboxError.seccomp(call: "read", syscall: nil, code: -errno) }
            filled += count
        }
        return bytes
    }
}
