import ArgumentParser
import Hermetic

#if canImport(Glibc)
    import Glibc
#endif

@main
struct HermeticCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hermetic",
        abstract: "Build reproducible, hermetic OCI images from Dockerfiles.",
        version: HermeticVersion.string,
        subcommands: [
            BuildCommand.self, LockCommand.self, KeyCommand.self, InspectCommand.self, VerifyCommand.self,
            RebuildCommand.self, DiskUsageCommand.self, PruneCommand.self, StoreCommand.self,
        ]
    )

    /// As ArgumentParser's, except that a usage error is one `error:` line (exit 64), like every other
    /// failure; `--help` and `--version` print as usual.
    static func main() async {
        // Swift reads argv from /proc/self/cmdline: without /proc every command would look like a bare
        // `hermetic` and print help with exit 0.
        guard CommandLine.argc > 0 else {
            writeErrorLine("hermetic cannot read its command line: /proc is not mounted (hermetic needs /proc)")
            Glibc.exit(1)
        }
        do {
            var command = try parseAsRoot()
            // Building needs root; a user who is not gets a user namespace in which the builder is.
            let environment = ProcessEnvironment.current()
            if command is BuildCommand || command is RebuildCommand, RootlessMode.isNeeded(environment: environment) {
                do {
                    Glibc.exit(try RootlessMode.relaunch(arguments: CommandLine.arguments, environment: environment))
                } catch {
                    writeErrorLine(error.description)
                    Glibc.exit(1)
                }
            }
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as ExitCode {
            exit(withError: error)
        } catch {
            guard exitCode(for: error) != .success else { exit(withError: error) }
            let message = fullMessage(for: error)
            let first = message.split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            let text = first.hasPrefix("Error: ") ? String(first.dropFirst("Error: ".count)) : first
            writeErrorLine(text + " (see hermetic --help)")
            Glibc.exit(64)
        }
    }
}
