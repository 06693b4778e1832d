#if canImport(Glibc)
    import Glibc
#endif

/// `EXPOSE` values as the config's `ExposedPorts` keys, as BuildKit's convert_expose.go reads them: a spec is
/// `[ip:][hostPort:]containerPort[/proto]`; only the container port (or range, expanded into each port) and
/// the protocol (tcp, udp, sctp; default tcp) are kept, but the IP and host port must be valid. Messages are
/// BuildKit's.
enum PortSpec {
    struct Invalid: Error, CustomStringConvertible {
        var description: String
    }

    static func expand(_ text: String, line: Int, file: String) throws -> [String] {
        do {
            return try expand(text)
        } catch {
            throw DockerfileError(file: file, line: line, message: error.description)
        }
    }

    static func expand(_ rawPort: String) throws(Invalid) -> [String] {
        var (ip, hostPort, containerPort) = splitParts(rawPort)
        let slash = containerPort.firstIndex(of: "/")
        let port = String(containerPort[..<(slash ?? containerPort.endIndex)])
        let proto = slash.map { containerPort[containerPort.index(after: $0)...].lowercased() } ?? ""
        guard !port.isEmpty else { throw Invalid(description: "no port specified: \(containerPort)<empty>") }
        guard ["", "tcp", "udp", "sctp"].contains(proto) else { throw Invalid(description: "invalid proto: \(proto)") }
        containerPort = port
        if ip.hasPrefix("[") {
            // Go's net.SplitHostPort(ip + ":") takes the brackets off an IPv6 address.
            ip = try bracketedHost(ip)
        }
        guard ip.isEmpty || isIPAddress(ip) else { throw Invalid(description: "invalid IP address: \(ip)") }
        guard let (start, end) = portRange(containerPort) else {
            throw Invalid(description: "invalid containerPort: \(containerPort)")
        }
        if !hostPort.isEmpty {
            guard let (hostStart, hostEnd) = portRange(hostPort) else {
                throw Invalid(description: "invalid hostPort: \(hostPort)")
            }
            // A host range of another length is allowed only for a single container port.
            if end - start != hostEnd - hostStart && end != start {
                throw Invalid(
                    description:
                        "invalid ranges specified for container and host Ports: \(containerPort) and \(hostPort)")
            }
        }
        return (start...end).map { "\($0)/\(proto.isEmpty ? "tcp" : proto)" }
    }

    /// `ip:host:container`, with an IPv6 address taking every colon but the last two.
    static func splitParts(_ rawPort: String) -> (ip: String, hostPort: String, containerPort: String) {
        let parts = rawPort.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        switch parts.count {
        case 1: return ("", "", parts[0])
        case 2: return ("", parts[0], parts[1])
        default:
            return (parts.dropLast(2).joined(separator: ":"), parts[parts.count - 2], parts[parts.count - 1])
        }
    }

    /// Go's `strconv.ParseUint(s, 10, 16)` on `port` or `start-end`.
    static func portRange(_ text: String) -> (UInt32, UInt32)? {
        func number(_ s: Substring) -> UInt32? {
            guard !s.isEmpty, s.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
            let digits = s.drop { $0 == "0" }
            guard digits.count <= 5, let value = UInt32(digits.isEmpty ? "0" : digits), value <= 65535 else {
                return nil
            }
            return value
        }
        let bounds = text.split(separator: "-", omittingEmptySubsequences: false)
        guard bounds.count <= 2, let start = number(bounds[0]), let end = number(bounds[bounds.count - 1]),
            end >= start
        else { return nil }
        return (start, end)
    }

    /// The host of Go's `net.SplitHostPort(ip + ":")` for a bracketed IP, with its errors.
    static func bracketedHost(_ ip: String) throws(Invalid) -> String {
        let hostport = Array((ip + ":").utf8)
        func fail(_ why: String) -> Invalid {
            Invalid(description: "invalid IP address \(ip): address \(ip):: \(why)")
        }
        let colon = hostport.count - 1
        guard let close = hostport.firstIndex(of: UInt8(ascii: "]")) else { throw fail("missing ']' in address") }
        if close + 1 == hostport.count { throw fail("missing port in address") }
        if close + 1 != colon {
            throw fail(
                hostport[close + 1] == UInt8(ascii: ":") ? "too many colons in address" : "missing port in address")
        }
        if hostport[1...].contains(UInt8(ascii: "[")) { throw fail("unexpected '[' in address") }
        if hostport[(close + 1)...].contains(UInt8(ascii: "]")) { throw fail("unexpected ']' in address") }
        return String(decoding: hostport[1..<close], as: UTF8.self)
    }

    /// Go's `net.ParseIP`: dotted IPv4 (no leading zeros) or IPv6, without a zone.
    static func isIPAddress(_ text: String) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 16)
        return inet_pton(AF_INET, text, &buffer) == 1 || inet_pton(AF_INET6, text, &buffer) == 1
    }
}

/// `HEALTHCHECK` as the config's `Healthcheck`: `NONE` → `["NONE"]`, shell form → `["CMD-SHELL", text]`,
/// exec form → `["CMD", args…]`; durations as integer nanoseconds (Docker's encoding).
enum HealthcheckConversion {
    static func config(_ health: HealthcheckInstruction, shell: [String]?, line: Int, file: String) throws
        -> HealthConfig
    {
        guard let command = health.command else { return HealthConfig(test: ["NONE"]) }
        var config = HealthConfig(test: [])
        switch command {
        case .shell(let text): config.test = ["CMD-SHELL", text]
        case .exec(let arguments): config.test = ["CMD"] + arguments
        }
        func nanoseconds(_ text: String?, _ flag: String) throws -> Int64? {
            guard let text else { return nil }
            guard let value = GoDuration.nanoseconds(text), value >= 0 else {
                throw DockerfileError(
                    file: file, line: line, message: "HEALTHCHECK --\(flag): invalid duration \"\(text)\"")
            }
            return value
        }
        config.interval = try nanoseconds(health.interval, "interval")
        config.timeout = try nanoseconds(health.timeout, "timeout")
        config.startPeriod = try nanoseconds(health.startPeriod, "start-period")
        config.startInterval = try nanoseconds(health.startInterval, "start-interval")
        if let retries = health.retries {
            guard let value = Int(retries), value >= 0 else {
                throw DockerfileError(
                    file: file, line: line, message: "HEALTHCHECK --retries: invalid number \"\(retries)\"")
            }
            config.retries = value
        }
        return config
    }
}

/// Go's `time.ParseDuration` grammar (`1h30m`, `500ms`, `2.5s`), to integer nanoseconds; nil if invalid.
enum GoDuration {
    static func nanoseconds(_ text: String) -> Int64? {
        let units: [(String, Double)] = [
            ("ns", 1), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9),
        ]
        if text == "0" { return 0 }
        var rest = Substring(text)
        var total = 0.0
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            guard let unit = units.sorted(by: { $0.0.count > $1.0.count }).first(where: { rest.hasPrefix($0.0) })
            else { return nil }
            rest = rest.dropFirst(unit.0.count)
            total += value * unit.1
            guard total < 9.2e18 else { return nil }
        }
        return Int64(total.rounded())
    }
}
