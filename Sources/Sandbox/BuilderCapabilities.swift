#if canImport(Glibc)
    import Glibc
#endif

/// What the builder itself may do, read from /proc/self/status. Inside a container the builder can lack
/// capabilities the sandbox needs (then RUN fails at once, naming them) or some of Docker's default set
/// that steps get (then steps get the rest: a capability cannot be given that the builder lacks).
public struct BuilderCapabilities: Sendable, Equatable {
    public var effective: UInt64
    public var permitted: UInt64
    public var bounding: UInt64

    public init(effective: UInt64, permitted: UInt64, bounding: UInt64) {
        self.effective = effective
        self.permitted = permitted
        self.bounding = bounding
    }

    /// This process's sets, read once (they do not change while it builds); nil when /proc/self/status
    /// cannot be read.
    public static let current: BuilderCapabilities? = readSmallFile("/proc/self/status").flatMap(parse)

    static func parse(_ status: String) -> BuilderCapabilities? {
        var values: [String: UInt64] = [:]
        for line in status.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == ":" || $0 == "\t" || $0 == " " })
            guard fields.count == 2, fields[0].hasPrefix("Cap"), let value = UInt64(fields[1], radix: 16) else {
                continue
            }
            values[String(fields[0])] = value
        }
        guard let effective = values["CapEff"], let permitted = values["CapPrm"], let bounding = values["CapBnd"] else {
            return nil
        }
        return BuilderCapabilities(effective: effective, permitted: permitted, bounding: bounding)
    }

    /// Whether the builder may mount filesystems itself (CAP_SYS_ADMIN, bit 21, effective).
    public var canMount: Bool { effective & (1 << 21) != 0 }

    /// What the sandbox itself needs: namespaces and mounts (SYS_ADMIN), bringing up the step's loopback
    /// (NET_ADMIN, not for a step on the host's network), reducing the bounding set (SETPCAP), and a
    /// step's groups and ids (SETGID, SETUID).
    public func missingForSandbox(hostNetwork: Bool) -> [String] {
        var needed: [UInt64] = [21, 8, 6, 7]
        if !hostNetwork { needed.insert(12, at: 1) }
        return needed.filter { effective & (1 << $0) == 0 }.map(Self.name)
    }

    /// Docker's default set, less what the builder cannot give.
    public var stepCapabilities: UInt64 { Sandbox.dockerDefaultCapabilities & permitted & bounding }

    /// Docker's default capabilities that steps do not get here.
    public var withheldFromSteps: [String] {
        let withheld = Sandbox.dockerDefaultCapabilities & ~stepCapabilities
        return (0..<64).filter { withheld & (UInt64(1) << UInt64($0)) != 0 }.map { Self.name(UInt64($0)) }
    }

    static func name(_ bit: UInt64) -> String {
        let names: [UInt64: String] = [
            0: "CHOWN", 1: "DAC_OVERRIDE", 3: "FOWNER", 4: "FSETID", 5: "KILL", 6: "SETGID", 7: "SETUID", 8: "SETPCAP",
            10: "NET_BIND_SERVICE", 12: "NET_ADMIN", 13: "NET_RAW", 18: "SYS_CHROOT", 21: "SYS_ADMIN", 27: "MKNOD",
            29: "AUDIT_WRITE", 31: "SETFCAP",
        ]
        return "CAP_" + (names[bit] ?? String(bit))
    }
}
