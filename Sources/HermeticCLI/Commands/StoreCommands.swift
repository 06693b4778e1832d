import ArgumentParser
import Foundation
import Hermetic

#if canImport(Glibc)
    import Glibc
#endif

/// The state directory a build run the same way would use (`--state-dir`, `$HERMETIC_STATE_DIR`, else
/// `/var/lib/hermetic` for root and the XDG state directory for anyone else).
private func stateDirectory(_ flag: String?) -> String {
    var environment = ProcessEnvironment.current()
    if let flag { return FileSystem.absolute(flag) }
    if let variable = environment["HERMETIC_STATE_DIR"], !variable.isEmpty { return FileSystem.absolute(variable) }
    if geteuid() != 0 { environment[RootlessMode.marker] = "1" }
    return RootlessMode.defaultStateDirectory(environment: environment)
}

private func openStore(_ flag: String?) throws -> ContentStore {
    let directory = stateDirectory(flag)
    guard FileSystem.isDirectory(directory + "/store") else {
        throw ArgumentError(argument: "--state-dir", value: directory, reason: "holds no store (no build used it)")
    }
    return try ContentStore(stateDirectory: directory)
}

private func bytesText(_ bytes: Int64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1000, unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    return unit == 0 ? "\(bytes)B" : String(format: "%.1f%@", value, units[unit])
}

struct DiskUsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "du", abstract: "Show what the build cache and cache mounts use (as docker buildx du).")

    @Option(name: .customLong("state-dir"), help: "The state directory (default: as hermetic build).")
    var stateDir: String?

    func run() async throws {
        try await reportingErrors {
            let usage = try openStore(stateDir).usage()
            print("KIND\tENTRIES\tSIZE\tLAST USED")
            for line in usage {
                let last = line.lastUsed.map { RFC3339.format($0) } ?? "-"
                print("\(line.kind)\t\(line.entries)\t\(bytesText(line.bytes))\t\(last)")
            }
            print("Total:\t\(bytesText(usage.reduce(0) { $0 + $1.bytes }))")
        }
    }
}

struct PruneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune", abstract: "Remove build cache (as docker buildx prune); waits for running builds.")

    @Option(name: .customLong("state-dir"), help: "The state directory (default: as hermetic build).")
    var stateDir: String?
    @Flag(help: "Also empty the cache mounts of RUN steps.") var all = false
    @Option(
        name: .customLong("keep-storage"),
        help: "Remove the least recently used entries until the cache takes at most this (e.g. 512MB, 10GB).")
    var keepStorage: String?
    @Option(help: "until=DURATION: remove only entries not used for this long (e.g. 24h, 90m).")
    var filter: [String] = []
    @Flag(help: "Do not prompt (hermetic never prompts; accepted as buildx takes it).") var force = false

    func run() async throws {
        try await reportingErrors {
            var usedBefore: Int64?
            for entry in filter {
                guard entry.hasPrefix("until="), let seconds = Self.duration(String(entry.dropFirst(6))) else {
                    throw ArgumentError(
                        argument: "--filter", value: entry, reason: "expected until=DURATION (e.g. 24h, 90m, 30s)")
                }
                usedBefore = Int64(time(nil)) - seconds
            }
            var keepBytes: Int64?
            if let keepStorage {
                guard let bytes = ByteCount.parse(keepStorage) else {
                    throw ArgumentError(
                        argument: "--keep-storage", value: keepStorage, reason: "expected a size such as 512MB or 10GB")
                }
                keepBytes = bytes
            }
            let removed = try openStore(stateDir).prune(
                usedBefore: usedBefore, keepBytes: keepBytes, includeCacheMounts: all)
            print("Total:\t\(bytesText(removed.bytes)) in \(removed.entries) entries")
        }
    }

    /// Go's time.ParseDuration for whole hours, minutes and seconds (`24h`, `1h30m`, `90s`).
    static func duration(_ text: String) -> Int64? {
        var total: Int64 = 0
        var digits = ""
        for character in text {
            if character.isASCII, character.isNumber {
                digits.append(character)
                continue
            }
            guard let value = Int64(digits) else { return nil }
            switch character {
            case "h": total += value * 3600
            case "m": total += value * 60
            case "s": total += value
            default: return nil
            }
            digits = ""
        }
        return digits.isEmpty && !text.isEmpty ? total : nil
    }
}

/// `512MB`, `10GB`, `1.5GiB`, `1000000` (bytes), as docker's units.RAMInBytes reads sizes.
enum ByteCount {
    static func parse(_ text: String) -> Int64? {
        let lowered = text.lowercased()
        let number = lowered.prefix { $0.isNumber || $0 == "." }
        let unit = lowered.dropFirst(number.count)
        guard let value = Double(number), value >= 0 else { return nil }
        let kibi = 1024.0
        let multipliers: [String: Double] = [
            "": 1, "b": 1, "k": kibi, "kb": kibi, "kib": kibi, "m": kibi * kibi, "mb": kibi * kibi,
            "mib": kibi * kibi, "g": kibi * kibi * kibi, "gb": kibi * kibi * kibi, "gib": kibi * kibi * kibi,
        ]
        guard let multiplier = multipliers[String(unit)] else { return nil }
        return Int64(value * multiplier)
    }
}

struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store", abstract: "Look after the builder's store.", subcommands: [Check.self])

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Read every stored blob against its digest and every record against its blobs.")

        @Option(name: .customLong("state-dir"), help: "The state directory (default: as hermetic build).")
        var stateDir: String?
        @Flag(help: "Remove what is wrong (waits for running builds).") var repair = false

        func run() async throws {
            try await reportingErrors {
                let findings = try openStore(stateDir).check(repair: repair)
                for finding in findings { print(finding.description) }
                if findings.isEmpty { print("the store is consistent") }
                if !findings.isEmpty, !repair { throw ExitCode(1) }
            }
        }
    }
}
