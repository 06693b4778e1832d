import ArgumentParser
import Hermetic

@main
struct HermeticCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hermetic",
        abstract: "Build reproducible, hermetic OCI images from Dockerfiles.",
        version: HermeticVersion.string,
        subcommands: [
            BuildCommand.self, LockCommand.self, KeyCommand.self, InspectCommand.self, VerifyCommand.self,
            RebuildCommand.self,
        ]
    )
}
