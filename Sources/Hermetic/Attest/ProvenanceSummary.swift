import Provenance

/// What a person wants to see of a provenance at a glance (`hermetic inspect`).
public enum ProvenanceSummary {
    public static func text(
        statement: InTotoStatement, runRecord: InTotoStatement?, checks: [DSSEEnvelope.SignatureCheck]
    )
        -> String
    {
        var lines: [String] = []
        let predicate = statement.predicate
        let definition = predicate["buildDefinition"]
        let external = definition?["externalParameters"]
        func string(_ value: JSONValue?) -> String { value?.stringValue ?? "-" }
        for subject in statement.subject {
            lines.append("subject       \(subject.name ?? "-") sha256:\(subject.digest?["sha256"] ?? "?")")
        }
        lines.append(
            "builder       \(string(predicate["runDetails"]?["builder"]?["id"])) \(string(predicate["runDetails"]?["builder"]?["version"]?["hermetic"]))"
        )
        lines.append("build type    \(string(definition?["buildType"]))")
        let dockerfile = external?["dockerfile"]
        var origin = dockerfile?["origin"]?.stringValue.map { " (\($0)" } ?? ""
        if !origin.isEmpty { origin += dockerfile?["content"] == nil ? ")" : ", its bytes carried)" }
        lines.append(
            "dockerfile    \(string(dockerfile?["path"])) sha256:\(string(dockerfile?["digest"]?["sha256"]))\(origin)")
        lines.append("target        \(string(external?["target"]))")
        if case .array(let platforms)? = external?["platforms"] {
            lines.append("platforms     \(platforms.compactMap(\.stringValue).joined(separator: ", "))")
        }
        if case .object(let args)? = external?["buildArgs"], !args.isEmpty {
            for (name, value) in args.sorted(by: { $0.key < $1.key }) {
                lines.append("build arg     \(name)=\(value.stringValue ?? "")")
            }
        }
        if case .array(let secrets)? = external?["secrets"] {
            for secret in secrets { lines.append("secret        \(string(secret["id"])) (value never recorded)") }
        }
        if case .array(let entitlements)? = external?["entitlements"], !entitlements.isEmpty {
            lines.append("entitlements  \(entitlements.compactMap(\.stringValue).joined(separator: ", "))")
        }
        if case .int(let epoch)? = external?["sourceDateEpoch"] { lines.append("epoch         \(epoch)") }
        lines.append("layer format  \(string(definition?["internalParameters"]?["layerFormat"]))")
        lines.append("context       sha256:\(string(external?["context"]?["digest"]?["sha256"]))")
        if case .array(let dependencies)? = definition?["resolvedDependencies"] {
            for dependency in dependencies {
                let name = dependency["name"]?.stringValue ?? dependency["uri"]?.stringValue ?? "?"
                guard name != "context", name != "dockerfile" else { continue }
                lines.append("input         \(name) sha256:\(string(dependency["digest"]?["sha256"]))")
            }
        }
        if case .array(let byproducts)? = predicate["runDetails"]?["byproducts"] {
            for item in byproducts {
                let annotations = item["annotations"]
                if item["name"]?.stringValue == "layer" {
                    lines.append(
                        "layer         sha256:\(string(item["digest"]?["sha256"])) \(string(annotations?["instruction"])) \(string(annotations?["createdBy"]))"
                    )
                } else {
                    lines.append(
                        "run step      \(string(annotations?["instruction"])) network=\(string(annotations?["network"]))"
                    )
                }
            }
        }
        if checks.isEmpty { lines.append("signature     none (unsigned)") }
        for check in checks {
            switch check {
            case .valid(let id): lines.append("signature     verified with key \(id)")
            case .invalid(let id): lines.append("signature     INVALID for key \(id)")
            case .unknownKey(let id): lines.append("signature     by key \(id) (not checked: give --key)")
            }
        }
        if let metadata = runRecord?.predicate["metadata"] {
            lines.append(
                "run           \(string(metadata["invocationId"])) \(string(metadata["startedOn"])) → \(string(metadata["finishedOn"]))"
            )
        }
        return lines.joined(separator: "\n")
    }
}
