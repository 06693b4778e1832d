/// `EXPOSE` values as the config's `ExposedPorts` keys: `80` → `80/tcp`, `53/udp` kept, and a range
/// `8000-8002/tcp` expanded into each port, as Docker does. Protocols: tcp, udp, sctp.
enum PortSpec {
    static let maximumRange = 65536

    static func expand(_ text: String, line: Int, file: String) throws -> [String] {
        func fail() -> DockerfileError {
            DockerfileError(file: file, line: line, message: "invalid EXPOSE port \"\(text)\"")
        }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { throw fail() }
        let proto = parts.count == 2 ? parts[1].lowercased() : "tcp"
        guard ["tcp", "udp", "sctp"].contains(proto) else { throw fail() }
        let bounds = parts[0].split(separator: "-", omittingEmptySubsequences: false)
        guard bounds.count == 1 || bounds.count == 2,
            let low = Int(bounds[0]), let high = Int(bounds.last ?? ""), low >= 0, high <= 65535, low <= high
        else { throw fail() }
        return (low...high).map { "\($0)/\(proto)" }
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
