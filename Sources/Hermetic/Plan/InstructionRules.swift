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
/// exec form → `["CMD", args…]`; durations as integer nanoseconds (Docker's encoding). Values are checked as
/// BuildKit's parseHealthcheck checks them, with its messages: a duration is Go's, 0 means unset, and any
/// other below 1ms is refused; retries are a 32-bit integer, 0 meaning unset, never negative.
enum HealthcheckConversion {
    static func config(_ health: HealthcheckInstruction, shell: [String]?, line: Int, file: String)
        throws(DockerfileError) -> HealthConfig
    {
        func fail(_ message: String) -> DockerfileError { DockerfileError(file: file, line: line, message: message) }
        guard let command = health.command else { return HealthConfig(test: ["NONE"]) }
        var config = HealthConfig(test: [])
        switch command {
        case .shell(let text): config.test = ["CMD-SHELL", text]
        case .exec(let arguments): config.test = ["CMD"] + arguments
        }
        func interval(_ text: String?, _ flag: String) throws(DockerfileError) -> Int64? {
            guard let text, !text.isEmpty else { return nil }
            let value: Int64
            do {
                value = try GoDuration.parse(text)
            } catch {
                throw fail(error.description)
            }
            if value == 0 { return nil }
            guard value >= 1_000_000 else { throw fail("Interval \"\(flag)\" cannot be less than 1ms") }
            return value
        }
        config.interval = try interval(health.interval, "interval")
        config.timeout = try interval(health.timeout, "timeout")
        config.startPeriod = try interval(health.startPeriod, "start-period")
        config.startInterval = try interval(health.startInterval, "start-interval")
        if let retries = health.retries, !retries.isEmpty {
            guard let value = Int32(retries) else {
                // Go's strconv.ParseInt(retries, 10, 32) errors.
                let body = retries.hasPrefix("-") || retries.hasPrefix("+") ? retries.dropFirst() : Substring(retries)
                let inRange = body.isEmpty || !body.allSatisfy { $0.isASCII && $0.isNumber }
                throw fail(
                    "strconv.ParseInt: parsing \(GoDuration.quoted(retries)): \(inRange ? "invalid syntax" : "value out of range")"
                )
            }
            guard value >= 0 else { throw fail("--retries cannot be negative (\(value))") }
            config.retries = value == 0 ? nil : Int(value)
        }
        return config
    }
}

/// Go's `time.ParseDuration` (`1h30m`, `500ms`, `2.5s`, `-1.5µs`), to integer nanoseconds, computed as Go does.
enum GoDuration {
    struct Invalid: Error, CustomStringConvertible {
        var description: String
    }

    static func nanoseconds(_ text: String) -> Int64? {
        try? parse(text)
    }

    /// A string as Go's time package quotes it in errors.
    static func quoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    static let units: [(name: [UInt8], nanoseconds: UInt64)] = [
        (Array("ns".utf8), 1), (Array("us".utf8), 1_000), (Array("\u{B5}s".utf8), 1_000),
        (Array("\u{3BC}s".utf8), 1_000), (Array("ms".utf8), 1_000_000), (Array("s".utf8), 1_000_000_000),
        (Array("m".utf8), 60_000_000_000), (Array("h".utf8), 3_600_000_000_000),
    ]

    static func parse(_ text: String) throws(Invalid) -> Int64 {
        let invalid = Invalid(description: "time: invalid duration \(quoted(text))")
        let limit: UInt64 = 1 << 63
        var s = Array(text.utf8)[...]
        func isDigit(_ c: UInt8?) -> Bool { c.map { (0x30...0x39).contains($0) } ?? false }
        var negative = false
        if let sign = s.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") {
            negative = sign == UInt8(ascii: "-")
            s = s.dropFirst()
        }
        if s.elementsEqual([UInt8(ascii: "0")]) { return 0 }
        guard !s.isEmpty else { throw invalid }
        var total: UInt64 = 0
        while !s.isEmpty {
            guard s.first == UInt8(ascii: ".") || isDigit(s.first) else { throw invalid }
            // The integer part; overflow is an error.
            var whole: UInt64 = 0
            let wholeDigits = s.prefix(while: { isDigit($0) })
            for c in wholeDigits {
                guard whole <= limit / 10 else { throw invalid }
                whole = whole * 10 + UInt64(c - 0x30)
                guard whole <= limit else { throw invalid }
            }
            s = s.dropFirst(wholeDigits.count)
            // The fraction; digits past what fits are ignored.
            var fraction: UInt64 = 0
            var scale = 1.0
            var fractionDigits = 0
            if s.first == UInt8(ascii: ".") {
                s = s.dropFirst()
                let digits = s.prefix(while: { isDigit($0) })
                fractionDigits = digits.count
                var overflow = false
                for c in digits where !overflow {
                    guard fraction <= (limit - 1) / 10, fraction * 10 + UInt64(c - 0x30) <= limit else {
                        overflow = true
                        continue
                    }
                    fraction = fraction * 10 + UInt64(c - 0x30)
                    scale *= 10
                }
                s = s.dropFirst(digits.count)
            }
            guard !wholeDigits.isEmpty || fractionDigits > 0 else { throw invalid }
            let unitName = s.prefix(while: { $0 != UInt8(ascii: ".") && !isDigit($0) })
            guard !unitName.isEmpty else {
                throw Invalid(description: "time: missing unit in duration \(quoted(text))")
            }
            s = s.dropFirst(unitName.count)
            guard let unit = units.first(where: { $0.name.elementsEqual(unitName) })?.nanoseconds else {
                throw Invalid(
                    description:
                        "time: unknown unit \(quoted(String(decoding: unitName, as: UTF8.self))) in duration \(quoted(text))"
                )
            }
            guard whole <= limit / unit else { throw invalid }
            whole *= unit
            if fraction > 0 {
                whole += UInt64(Double(fraction) * (Double(unit) / scale))
                guard whole <= limit else { throw invalid }
            }
            total += whole
            guard total <= limit else { throw invalid }
        }
        if negative { return Int64(bitPattern: 0 &- total) }
        guard total <= limit - 1 else { throw invalid }
        return Int64(total)
    }
}
