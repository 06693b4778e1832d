/// A parsed Dockerfile: parser directives and instructions, each with its source range.
public struct Dockerfile: Sendable {
    public var file: String
    public var directives: ParserDirectives
    public var instructions: [Instruction]
}

/// Parser directives (`# syntax=`, `# escape=`, `# check=`) from the top of the file.
public struct ParserDirectives: Sendable, Hashable {
    public var escape: Character = "\\"
    public var syntax: String?
    public var check: String?
}

public enum DockerfileLimits {
    /// Larger Dockerfiles are refused before parsing.
    public static let maximumFileSize = 10 << 20
    /// A physical line longer than this is an error (`line too long`).
    public static let maximumLineLength = 65_536
    /// Instructions per file.
    public static let maximumInstructions = 100_000
}

public struct Instruction: Sendable {
    public var kind: InstructionKind
    public var range: SourceRange
    /// The instruction as written (continuation lines joined, heredoc bodies left out); history's `created_by`.
    public var original: String
    /// The heredocs' bodies as written, each as a newline, the body and its terminator (BuildKit's parser joins
    /// them so); empty without heredocs. A heredoc RUN's history carries them: they are its script.
    public var heredocText: String = ""
}

public enum CommandForm: Sendable, Hashable {
    case shell(String)
    case exec([String])
}

/// A heredoc attached to RUN, COPY or ADD.
public struct Heredoc: Sendable, Hashable {
    public var name: String
    public var content: String
    /// False when the delimiter was quoted (`<<'EOF'`, `<<"EOF"`): no expansion then.
    public var expand: Bool
    /// `<<-`: leading tabs were stripped from the body and the terminator.
    public var chomp: Bool
    /// `3<<EOF`: the file descriptor the heredoc is for, if one was written.
    public var fileDescriptor: Int?
}

public struct FromInstruction: Sendable, Hashable {
    public var image: String
    public var stageName: String?
    public var platform: String?
}

public struct ArgDeclaration: Sendable, Hashable {
    public var name: String
    public var defaultValue: String?
}

public struct KeyValue: Sendable, Hashable {
    public var key: String
    public var value: String
}

/// COPY and ADD.
public struct CopyInstruction: Sendable, Hashable {
    public var isAdd: Bool
    public var sources: [String]
    public var destination: String
    /// Heredocs used as sources (their names appear in `sources` as `<<NAME` words were replaced by NAME).
    public var heredocs: [Heredoc]
    public var from: String?
    public var chown: String?
    public var chmod: String?
    public var link: Bool
    public var parents: Bool
    public var excludes: [String]
    public var checksum: String?
    public var keepGitDir: Bool
    public var unpack: Bool?
}

public struct RunInstruction: Sendable, Hashable {
    public var command: CommandForm
    public var heredocs: [Heredoc]
    /// Raw `--mount` values, in order.
    public var mounts: [String]
    public var network: String?
    public var security: String?
}

public struct HealthcheckInstruction: Sendable, Hashable {
    /// nil for `HEALTHCHECK NONE`.
    public var command: CommandForm?
    public var interval: String?
    public var timeout: String?
    public var startPeriod: String?
    public var startInterval: String?
    public var retries: String?
}

public enum InstructionKind: Sendable {
    case from(FromInstruction)
    case arg([ArgDeclaration])
    case env([KeyValue])
    case label([KeyValue])
    case copy(CopyInstruction)
    case run(RunInstruction)
    case workdir(String)
    case user(String)
    case cmd(CommandForm)
    case entrypoint(CommandForm)
    case shell([String])
    case expose([String])
    case volume([String])
    case stopSignal(String)
    case healthcheck(HealthcheckInstruction)
    case onbuild(String)
    case maintainer(String)
}
