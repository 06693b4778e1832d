import Sandbox

#if canImport(Glibc)
    import Glibc
#endif

/// Rootless mode (SPEC §2.4): `hermetic build` and `rebuild` started by a user other than root run
/// again as uid 0 of a new user namespace (see `Sandbox.UserNamespace`), where the same code builds
/// the same bytes. Ownership in layers comes from the build, never from the host ids.
public enum RootlessMode {
    /// In the relaunched builder's environment: it runs in the namespace this mode made.
    public static let marker = "HERMETIC_ROOTLESS"

    /// Why the builder could not be relaunched in a user namespace.
    public struct LaunchError: HermeticError {
        public var reason: String
        public var description: String { reason + " (or run hermetic build as root)" }
    }

    /// Whether this process must relaunch itself before it can build: not root, and not already the
    /// relaunched builder (which would mean the namespace did not make it root: an error, not a loop).
    public static func isNeeded(environment: [String: String]) -> Bool {
        geteuid() != 0 && environment[marker] == nil
    }

    /// Relaunches this executable with `arguments` (argv, the program name first) in a new user
    /// namespace and waits for it. Returns the exit status to end with (128+N when it was killed by N).
    public static func relaunch(arguments: [String], environment: [String: String]) throws(LaunchError) -> Int32 {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else {
            throw LaunchError(reason: "rootless mode: cannot find this executable (/proc/self/exe): \(errno)")
        }
        let executable = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var variables = environment
        variables[marker] = "1"
        let status: Int32
        do {
            status = try UserNamespace.run(
                executable: executable, arguments: arguments,
                environment: variables.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })
        } catch {
            throw LaunchError(reason: error.description)
        }
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Where cache mounts persist by default: /var/lib/hermetic for root; in rootless mode the user's
    /// `$XDG_STATE_HOME/hermetic` (or `~/.local/state/hermetic`), which the user can write.
    public static func defaultStateDirectory(environment: [String: String]) -> String {
        guard environment[marker] != nil else { return "/var/lib/hermetic" }
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") { return state + "/hermetic" }
        if let home = environment["HOME"], home.hasPrefix("/") { return home + "/.local/state/hermetic" }
        return "/var/lib/hermetic"
    }
}
