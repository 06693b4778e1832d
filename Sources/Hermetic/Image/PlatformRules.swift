/// Platform rules after containerd's `platforms` package: parsing a specifier (`Parse`), normalising
/// (`normalizeArch`), which image content serves a requested platform (`Only`, kept to one architecture),
/// and which platforms this host runs without emulation.
extension Platform {
    public struct ParseError: HermeticError {
        public var text: String
        public var reason: String
        public var description: String { "platform \"\(text)\": \(reason)" }
    }

    /// Go's GOOS names, as containerd's `isKnownOS`.
    static let knownOperatingSystems: Set<String> = [
        "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux", "nacl",
        "netbsd", "openbsd", "plan9", "solaris", "windows", "zos",
    ]

    /// Go's GOARCH names, as containerd's `isKnownArch`.
    static let knownArchitectures: Set<String> = [
        "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le", "loong64", "mips",
        "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "riscv", "riscv64", "s390", "s390x",
        "sparc", "sparc64", "wasm",
    ]

    /// `os/arch[/variant]`; a single word is an OS (with the host's architecture) when Go knows it as one,
    /// else an architecture on linux. Lowercased and normalised as containerd does; the OS and the
    /// architecture must be names Go knows, and a variant of amd64, arm or arm64 one containerd knows.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map { $0.lowercased() }
        guard (1...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else {
            throw ParseError(text: text, reason: "expected os/arch[/variant]")
        }
        guard
            parts.allSatisfy({
                $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_-.".contains($0)) }
            })
        else {
            throw ParseError(text: text, reason: "expected os/arch[/variant] of letters, digits, '_', '-' and '.'")
        }
        if parts.count == 1 {
            let os = Self.normalizedOS(parts[0])
            if Self.knownOperatingSystems.contains(os) {
                self.init(os: os, architecture: Platform.host.architecture, variant: Platform.host.variant)
                return
            }
            self = Platform(os: "linux", architecture: parts[0]).normalized
            guard Self.knownArchitectures.contains(architecture) else {
                throw ParseError(text: text, reason: "unknown operating system or architecture (expected os/arch)")
            }
            return
        }
        let os = Self.normalizedOS(parts[0])
        guard Self.knownOperatingSystems.contains(os) else {
            throw ParseError(text: text, reason: "unknown operating system \"\(parts[0])\"")
        }
        self = Platform(os: os, architecture: parts[1], variant: parts.count == 3 ? parts[2] : nil).normalized
        guard Self.knownArchitectures.contains(architecture) else {
            throw ParseError(text: text, reason: "unknown architecture \"\(parts[1])\"")
        }
        if let variant, let known = Self.knownVariants[architecture], !known.contains(variant) {
            throw ParseError(
                text: text,
                reason:
                    "unknown variant \"\(variant)\" of \(architecture) (one of \(known.sorted().joined(separator: ", ")))"
            )
        }
    }

    /// The variants containerd's matcher knows, after normalisation (amd64's `v1`, arm64's `v8` are no
    /// variant); other architectures' variants are taken as written.
    static let knownVariants: [String: Set<String>] = [
        "amd64": ["v2", "v3", "v4"],
        "arm": ["v5", "v6", "v7", "v8"],
        "arm64": Set((1...9).map { "v8.\($0)" } + ["v9"] + (1...7).map { "v9.\($0)" }),
    ]

    static func normalizedOS(_ os: String) -> String {
        let lowered = os.lowercased()
        return lowered == "macos" ? "darwin" : lowered
    }

    /// containerd's normalisation: lowercase, Go's architecture names (`x86_64` → amd64, `aarch64` →
    /// arm64, `armhf` → arm/v7, `armel` → arm/v6, `i386` → 386), default variants dropped (amd64 `v1`,
    /// arm64 `v8`), arm's missing variant made `v7`.
    public var normalized: Platform {
        var result = Platform(
            os: Self.normalizedOS(os), architecture: architecture.lowercased(), variant: variant?.lowercased())
        switch result.architecture {
        case "i386":
            result.architecture = "386"
            result.variant = nil
        case "x86_64", "x86-64", "amd64":
            result.architecture = "amd64"
            if result.variant == "v1" { result.variant = nil }
        case "aarch64", "arm64":
            result.architecture = "arm64"
            switch result.variant {
            case "8", "v8", "v8.0": result.variant = nil
            case "9", "9.0", "v9.0": result.variant = "v9"
            default: break
            }
        case "armhf":
            result.architecture = "arm"
            result.variant = "v7"
        case "armel":
            result.architecture = "arm"
            result.variant = "v6"
        case "arm":
            switch result.variant {
            case nil, "7": result.variant = "v7"
            case "5", "6", "8": result.variant = "v" + (result.variant ?? "")
            default: break
            }
        default: break
        }
        if result.variant == "" { result.variant = nil }
        result.osVersion = osVersion
        result.osFeatures = osFeatures
        return result
    }

    /// The variants of `self`'s architecture whose programs a `self` machine runs, best first, as
    /// containerd's `platforms.Only` orders them (amd64/v3: v3, v2, v1; arm/v7: v7, v6, v5; arm64/v8.2:
    /// v8.2, v8.1, v8; arm64/v9.1: v9.1, v9, v8.6 … v8). It never crosses to another architecture.
    var compatibleVariants: [String?] {
        let platform = normalized
        let number = platform.variant.flatMap { Int($0.dropFirst()) }
        switch platform.architecture {
        case "amd64":
            return [platform.variant]
                + stride(from: (number ?? 1) - 1, through: 1, by: -1).map { $0 == 1 ? nil : "v\($0)" }
        case "arm":
            guard let number else { return [platform.variant] }
            return stride(from: number, through: 5, by: -1).map { "v\($0)" }
        case "arm64":
            let version = (platform.variant ?? "v8").dropFirst().split(separator: ".").compactMap { Int($0) }
            guard let major = version.first, major == 8 || major == 9, version.count <= 2 else {
                return [platform.variant]
            }
            let minor = version.count == 2 ? version[1] : 0
            func name(_ major: Int, _ minor: Int) -> String? {
                major == 8 && minor == 0 ? nil : minor == 0 ? "v\(major)" : "v\(major).\(minor)"
            }
            let own = stride(from: minor, through: 0, by: -1).map { name(major, $0) }
            return major == 9 ? own + stride(from: min(minor + 5, 9), through: 0, by: -1).map { name(8, $0) } : own
        default:
            return [platform.variant]
        }
    }

    /// Whether an image whose content is `self` (its config, or its descriptor's label) serves a build for
    /// `requested`: the same OS and architecture, and a variant a `requested` machine runs. Content that
    /// states no variant is not judged on its variant.
    public func serves(_ requested: Platform) -> Bool {
        let content = normalized
        let wanted = requested.normalized
        guard content.os == wanted.os, content.architecture == wanted.architecture else { return false }
        return variant == nil || wanted.compatibleVariants.contains(content.variant)
    }

    /// How well `self` serves `requested` (lower is better): the rank of its variant among the ones
    /// `requested` runs; a variant it does not state ranks after every stated one.
    func rank(serving requested: Platform) -> Int {
        requested.compatibleVariants.firstIndex(of: normalized.variant) ?? Int.max
    }

    /// Whether this host runs programs for `self` without emulation: its own architecture (any variant;
    /// the CPU features a variant needs are not checked), and the 32-bit architecture of the same family,
    /// as containerd's `platforms.Only(host)` matches: linux/386 on linux/amd64, linux/arm on linux/arm64.
    public func runsNatively(on host: Platform) -> Bool {
        let platform = normalized
        guard platform.os == host.os else { return false }
        switch (host.architecture, platform.architecture) {
        case (let hostArchitecture, let architecture) where hostArchitecture == architecture: return true
        case ("amd64", "386"), ("arm64", "arm"): return true
        default: return false
        }
    }
}

/// A base image whose content (its config, or its descriptor's platform) is not the platform asked for, or
/// an image index with no entry for it.
public struct PlatformMismatchError: HermeticError {
    public enum Finding: Sendable {
        /// The config says this platform.
        case content(Platform)
        /// The descriptor is labelled with this platform (its config may say otherwise).
        case label(Platform)
        /// An index whose entries are these platforms, none serving the request.
        case noEntry(available: [Platform])
    }
    public var layout: String
    public var requested: Platform
    public var finding: Finding
    public var description: String {
        let image = "the image in oci-layout://\(layout)"
        switch finding {
        case .content(let found): return "\(image) is \(found), not the requested \(requested)"
        case .label(let found): return "\(image) is labelled \(found) in its index, not the requested \(requested)"
        case .noEntry(let available):
            let listed =
                available.isEmpty ? "none names a platform" : available.map(\.description).joined(separator: ", ")
            return "the image index in oci-layout://\(layout) has no image for \(requested) (it has \(listed))"
        }
    }
}
