/// Warnings and policies that look at the whole build rather than one instruction.
enum BuildChecks {
    /// Name parts that mark a value as sensitive (BuildKit's `SecretsUsedInArgOrEnv` check).
    static let sensitiveParts: Set<String> = [
        "apikey", "auth", "credential", "credentials", "key", "password", "passwd", "pword", "secret", "token",
    ]

    static func looksSensitive(_ name: String) -> Bool {
        let parts = name.lowercased().split(whereSeparator: { $0 == "_" || $0 == "-" || $0 == "." })
        return parts.contains { sensitiveParts.contains(String($0)) }
    }

    /// One warning line per ARG/ENV name that looks sensitive, per build arg that does, and per ADD URL
    /// that carries credentials.
    static func warnings(dockerfile: Dockerfile, buildArgs: [BuildArg]) -> [String] {
        var result: [String] = []
        for instruction in dockerfile.instructions {
            let line = instruction.range.start.line
            var names: [(String, String)] = []
            switch instruction.kind {
            case .arg(let declarations): names = declarations.map { ("ARG", $0.name) }
            case .env(let pairs): names = pairs.map { ("ENV", $0.key) }
            case .copy(let copy):
                for source in copy.sources where InstructionBuilder.isRemote(source) {
                    if let scheme = source.range(of: "://"),
                        source[scheme.upperBound...].prefix(while: { $0 != "/" }).contains("@")
                    {
                        result.append(
                            "\(dockerfile.file):\(line): ADD URL carries credentials; they end up in the provenance")
                    }
                }
            default: break
            }
            for (keyword, name) in names where looksSensitive(name) {
                result.append(
                    "\(dockerfile.file):\(line): SecretsUsedInArgOrEnv: do not use \(keyword) for sensitive data (\(keyword) \"\(name)\"); use RUN --mount=type=secret"
                )
            }
        }
        for argument in buildArgs where looksSensitive(argument.name) {
            result.append(
                "--build-arg \(argument.name): looks sensitive; its value is recorded in the provenance (use --secret)")
        }
        return result
    }

    /// `--require-hermetic`: no step had network access or read a cache mount that already held data.
    static func hermeticityFailures(_ record: BuildRecord, file: String) -> [String] {
        var failures: [String] = []
        for step in record.steps {
            if step.network != "none" { failures.append("\(file):\(step.line): the RUN step had network access") }
            for cache in step.cacheMounts where cache.hadData {
                failures.append("\(file):\(step.line): the RUN step read a non-empty cache mount (id \(cache.id))")
            }
        }
        return failures
    }
}

struct HermeticityError: HermeticError {
    var failures: [String]
    var description: String {
        "--require-hermetic: " + failures.joined(separator: "; ")
    }
}
