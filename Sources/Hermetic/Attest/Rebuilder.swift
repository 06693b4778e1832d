import Foundation
import Provenance
import Sandbox

#if canImport(Glibc)
    import Glibc
#endif

/// `hermetic rebuild`: rebuilds an image from its provenance alone, in a deliberately different environment,
/// and compares. On a mismatch it names the first layer that differs, the instruction that made it, and the
/// files in it that differ.
public struct Rebuilder {
    public var target: String
    public var contextDirectory: String
    /// `rebuild -f`: the Dockerfile to use, checked against the recorded digest.
    public var dockerfile: String?
    public var namedContexts: [String: NamedContext]
    public var secrets: [String]
    public var entitlements: [String]
    /// The `hermetic` executable that runs the rebuild (a child process, so its environment can differ).
    public var executable: String
    /// The attestations of `target`, when already read (from a registry: `StoredAttestations.withTarget`).
    public var stored: StoredAttestations?

    public init(
        target: String, contextDirectory: String, dockerfile: String? = nil, namedContexts: [String: NamedContext],
        secrets: [String], entitlements: [String], executable: String
    ) {
        self.target = target
        self.contextDirectory = contextDirectory
        self.dockerfile = dockerfile
        self.namedContexts = namedContexts
        self.secrets = secrets
        self.entitlements = entitlements
        self.executable = executable
    }

    public struct Outcome: Sendable {
        public var reproduced: Bool
        public var originalSubjects: [String]
        public var rebuiltSubjects: [String]
        /// One line each: what differs.
        public var findings: [String]
        public var statement: InTotoStatement
        /// sha256 of the provenance statement the rebuild followed (the VSA's input attestation).
        public var provenanceDigest: Digest
    }

    /// The hostname the rebuild runs under (a UTS namespace of its own).
    public static let rebuildHostname = "hermetic-rebuild-elsewhere"

    public struct RebuildError: HermeticError {
        public var reason: String
        public var description: String { "rebuild: \(reason)" }
    }

    public func run() async throws -> Outcome {
        let stored = try self.stored ?? StoredAttestations.load(target)
        let statement = try stored.statement()
        let predicate = statement.predicate
        guard let external = predicate["buildDefinition"]?["externalParameters"] else {
            throw RebuildError(reason: "the provenance has no externalParameters")
        }
        let scratch = try FileSystem.makeTemporaryDirectory(in: "/tmp", prefix: "hermetic-rebuild-")
        defer { FileSystem.removeTree(scratch) }

        // A copy of the context at another path, created in reverse order, with other mtimes.
        let context = scratch + "/elsewhere/context"
        try FileSystem.makeDirectories(context)
        try copyTree(from: FileSystem.absolute(contextDirectory), to: context)
        let input = try dockerfileInput(
            recorded: try DockerfileSource(recorded: external["dockerfile"]), contextCopy: context)
        var standardInput = FileHandle.nullDevice
        if let bytes = input.standardInput {
            try FileSystem.writeAtomically(bytes, to: scratch + "/stdin-Dockerfile")
            standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: scratch + "/stdin-Dockerfile"))
        }

        // `force` is recorded only when it recompressed a base layer; the key goes back on the output, the
        // only place a build takes it.
        let forced = external["compression"]?["force"] == .bool(true)
        var arguments = [
            "build", context, "-f", input.argument, "--progress", "quiet",
            "-o", "type=oci,dest=\(scratch)/image" + (forced ? ",force-compression=true" : ""),
            "--attest-file", "\(scratch)/attest.jsonl", "--state-dir", scratch + "/state",
        ]
        if case .int(let epoch)? = external["sourceDateEpoch"] { arguments += ["--source-date-epoch", String(epoch)] }
        if let stage = external["target"]?.stringValue { arguments += ["--target", stage] }
        if let compression = external["compression"]?["type"]?.stringValue {
            arguments += ["--compression", compression]
            if case .int(let level)? = external["compression"]?["level"] {
                arguments += ["--compression-level", String(level)]
            }
        }
        if case .array(let platforms)? = external["platforms"] {
            arguments += ["--platform", platforms.compactMap(\.stringValue).joined(separator: ",")]
        }
        if case .object(let args)? = external["buildArgs"] {
            for (name, value) in args.sorted(by: { $0.key < $1.key }) {
                arguments += ["--build-arg", "\(name)=\(value.stringValue ?? "")"]
            }
        }
        // Inputs pinned to exactly what the provenance says.
        if case .array(let dependencies)? = predicate["buildDefinition"]?["resolvedDependencies"] {
            for dependency in dependencies {
                guard let name = dependency["name"]?.stringValue, name != "context", name != "dockerfile",
                    let hex = dependency["digest"]?["sha256"]?.stringValue
                else { continue }
                let bare = ImageResolver.split(name).0
                guard case .ociLayout(let path, let tag, _)? = namedContexts[name] ?? namedContexts[bare] else {
                    throw RebuildError(
                        reason:
                            "the build used image \"\(name)\": give its layout with --build-context \(bare)=oci-layout:///path"
                    )
                }
                let tagPart = tag.map { ":" + $0 } ?? ""
                arguments += ["--build-context", "\(bare)=oci-layout://\(path)\(tagPart)@sha256:\(hex)"]
            }
        }
        for (name, context) in namedContexts {
            if case .directory(let directory) = context {
                arguments += ["--build-context", "\(name)=\(FileSystem.absolute(directory))"]
            }
        }
        for secret in secrets { arguments += ["--secret", secret] }
        for entitlement in entitlements { arguments += ["--allow", entitlement] }

        // The different environment: another umask, time zone, locale, temporary directory and hostname.
        let tmp = scratch + "/tmp"
        try FileSystem.makeDirectory(tmp)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "umask 027 && exec \"$0\" \"$@\"", executable] + arguments
        process.environment = [
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TZ": "Asia/Kathmandu", "LANG": "de_DE.UTF-8",
            "LC_ALL": "tr_TR.UTF-8", "TMPDIR": tmp,
        ]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = standardInput
        try Sandbox.enterPrivateHostname(Self.rebuildHostname)
        try process.run()
        let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw RebuildError(
                reason: "the rebuild failed: \(errorText.split(separator: "\n").last.map(String.init) ?? "no message")")
        }
        let rebuilt = try StoredAttestations.load(scratch + "/attest.jsonl")
        let rebuiltStatement = try rebuilt.statement()
        // From a registry, the rebuild must give the platform manifests the registry holds (which the
        // provenance must name as subjects): what the digest read names, not only what the provenance says.
        let original =
            stored.registryImage != nil
            ? (stored.imageManifests ?? []).map(\.hex) : statement.subject.compactMap { $0.digest?["sha256"] }
        let again = rebuiltStatement.subject.compactMap { $0.digest?["sha256"] }
        let reproduced = stored.registryImage != nil ? Set(original) == Set(again) : original == again
        var findings: [String] = []
        if !reproduced {
            findings = try await explain(
                original: statement, rebuilt: rebuiltStatement, rebuiltLayout: scratch + "/image",
                scratch: scratch)
        }
        return Outcome(
            reproduced: reproduced, originalSubjects: original, rebuiltSubjects: again,
            findings: findings, statement: statement,
            provenanceDigest: Digest.sha256(of: try stored.definition.payloadBytes()))
    }

    /// The rebuild's `-f` value, and the bytes to give it on standard input when that is `-`: the person's
    /// `-f`, else the file in the context copy, else the bytes the provenance carries (a `-f -` build). Each
    /// is checked against the recorded digest first.
    func dockerfileInput(recorded: DockerfileSource, contextCopy: String) throws -> (
        argument: String, standardInput: [UInt8]?
    ) {
        func checked(_ bytes: [UInt8], _ what: String) throws -> [UInt8] {
            let actual = Digest.sha256(of: bytes)
            guard actual == recorded.digest else {
                throw RebuildError(
                    reason: "\(what) has \(actual), but the provenance records the Dockerfile as \(recorded.digest)")
            }
            return bytes
        }
        func read(_ path: String, _ what: String) throws -> [UInt8] {
            do {
                return try FileSystem.readFile(path, limit: DockerfileLimits.maximumFileSize, allowPipe: true)
            } catch {
                throw RebuildError(reason: "\(what): cannot read the Dockerfile: \(error)")
            }
        }
        if let dockerfile {
            let bytes = try checked(try read(dockerfile, "-f \(dockerfile)"), "-f \(dockerfile)")
            // A `-f -` build is rebuilt from standard input again, so that it records the same origin.
            return recorded.origin == .stdin ? ("-", bytes) : (FileSystem.absolute(dockerfile), nil)
        }
        switch recorded.origin {
        case .stdin:
            guard let content = recorded.content else {
                throw RebuildError(
                    reason:
                        "the Dockerfile was read from standard input and the provenance does not carry it; pass -f PATH"
                )
            }
            return ("-", content)
        case .outsideContext:
            throw RebuildError(
                reason: "the Dockerfile was read from \(recorded.path) outside the context; pass -f PATH")
        case .context:
            let path = contextCopy + "/" + recorded.path
            let shown = FileSystem.absolute(contextDirectory) + "/" + recorded.path
            guard FileSystem.exists(path) else {
                throw RebuildError(
                    reason: "the Dockerfile \(recorded.path) is not in the context \(contextDirectory); pass -f PATH")
            }
            _ = try checked(try read(path, shown), shown)
            return (path, nil)
        }
    }

    /// Finds the first differing layer and what differs in it.
    private func explain(original: InTotoStatement, rebuilt: InTotoStatement, rebuiltLayout: String, scratch: String)
        async throws
        -> [String]
    {
        func layers(_ statement: InTotoStatement) -> [JSONValue] {
            guard case .array(let items)? = statement.predicate["runDetails"]?["byproducts"] else { return [] }
            return items.filter { $0["name"]?.stringValue == "layer" }
        }
        let before = layers(original)
        let after = layers(rebuilt)
        guard !before.isEmpty else {
            return ["the image differs; the provenance has no per-layer records (built with --provenance mode=min)"]
        }
        var findings: [String] = []
        for (index, (a, b)) in zip(before, after).enumerated() {
            let digestA = a["digest"]?["sha256"]?.stringValue ?? ""
            let digestB = b["digest"]?["sha256"]?.stringValue ?? ""
            guard digestA != digestB else { continue }
            let instruction = a["annotations"]?["instruction"]?.stringValue ?? "?"
            let createdBy = a["annotations"]?["createdBy"]?.stringValue ?? ""
            let change = "sha256:\(digestA) was rebuilt as sha256:\(digestB)"
            let sameDiffID = a["annotations"]?["diffID"] == b["annotations"]?["diffID"]
            // A layer of an intermediate stage is in neither layout: name its stage and step, then follow the
            // difference to the first layer of the image itself, whose files can be compared.
            guard FileSystem.exists(rebuiltLayout + "/blobs/sha256/" + digestB) else {
                guard findings.isEmpty else { continue }
                let stage = a["annotations"]?["stage"]?.stringValue ?? "?"
                findings.append(
                    "the layer made by \(instruction) (\(createdBy)) in stage \(stage) differs (layer #\(index + 1) of those this build made): \(change)"
                )
                findings.append(
                    sameDiffID
                        ? "  the uncompressed layers (diff_ids) agree: only the compressed bytes differ"
                        : "  stage \(stage) is not part of the image, so its layers are not kept: the build first differs at \(instruction)"
                )
                continue
            }
            findings.append(
                findings.isEmpty
                    ? "the layer made by \(instruction) (\(createdBy)) differs (layer #\(index + 1) of those this build made): \(change)"
                    : "it reaches the image through the layer made by \(instruction) (\(createdBy)), which differs too: \(change)"
            )
            if sameDiffID {
                findings.append("the uncompressed layers (diff_ids) agree: only the compressed bytes differ")
                return findings
            }
            findings += try await compareLayerFiles(
                originalDigest: digestA, rebuiltDigest: digestB, rebuiltLayout: rebuiltLayout,
                scratch: scratch)
            return findings
        }
        if !findings.isEmpty {
            return findings + ["no layer of the image itself differs: its config or manifest does"]
        }
        if before.count != after.count {
            return ["the rebuild made \(after.count) layers, the original \(before.count)"]
        }
        return ["the layers agree; the image config or manifest differs"]
    }

    private func compareLayerFiles(
        originalDigest: String, rebuiltDigest: String, rebuiltLayout: String, scratch: String
    ) async throws
        -> [String]
    {
        let layoutPath =
            FileSystem.isDirectory(target) ? target : (target.split(separator: ":").first.map(String.init) ?? target)
        var originalBlob = layoutPath + "/blobs/sha256/" + originalDigest
        if let image = stored?.registryImage {
            // Only the image's manifests and attestations were read from the registry: this one layer is
            // fetched now, verified, to compare its files.
            guard let layer = stored?.layout?.imageLayer(hex: originalDigest) else {
                return ["(the original layer sha256:\(originalDigest) is named by no platform manifest of the image)"]
            }
            originalBlob = scratch + "/original-layer"
            try await image.download(layer, to: originalBlob)
        }
        guard FileSystem.exists(originalBlob) else {
            return [
                "(the original layer's blob is not at hand: give the image layout, not only an attest file, to see its files)"
            ]
        }
        func listing(_ blob: String, _ name: String) throws -> [String: String] {
            let staging = scratch + "/" + name
            try FileSystem.makeDirectory(staging)
            var result: [String: String] = [:]
            for entry in try ArchiveExtractor().entries(ofArchiveAt: blob, stagingDirectory: staging) {
                var description =
                    "mode \(String(entry.mode, radix: 8)) owner \(entry.uid):\(entry.gid) mtime \(entry.mtime)"
                switch entry.kind {
                case .directory: description = "directory, " + description
                case .regular(let source):
                    var content = ""
                    if case .file(let path, _) = source {
                        content = (try? ContextDigest.fileDigest(path).description) ?? "?"
                    }
                    if case .bytes(let bytes) = source { content = Digest.sha256(of: bytes).description }
                    description = "file, size \(source.size), content \(content), " + description
                case .symlink(let target): description = "symlink to \(target), " + description
                case .hardlink(let target): description = "hardlink to \(target), " + description
                default: description = "special, " + description
                }
                result[entry.path] = description
            }
            return result
        }
        let a = try listing(originalBlob, "original")
        let b = try listing(rebuiltLayout + "/blobs/sha256/" + rebuiltDigest, "rebuilt")
        var findings: [String] = []
        for path in Set(a.keys).union(b.keys).sorted() where a[path] != b[path] {
            findings.append("  \(path): was \(a[path] ?? "absent"); now \(b[path] ?? "absent")")
            if findings.count >= 50 {
                findings.append("  … (more files differ)")
                break
            }
        }
        return findings
    }

    /// Copies a tree (files, directories, symlinks) creating entries in reverse name order, with new mtimes.
    private func copyTree(from source: String, to destination: String) throws {
        let fm = FileManager.default
        for name in try fm.contentsOfDirectory(atPath: source).sorted().reversed() {
            let from = source + "/" + name
            let to = destination + "/" + name
            var info = stat()
            guard lstat(from, &info) == 0 else { continue }
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                try FileSystem.makeDirectory(to)
                try copyTree(from: from, to: to)
                chmod(to, info.st_mode & 0o7777)
            case S_IFLNK:
                try fm.createSymbolicLink(atPath: to, withDestinationPath: try RootedPath.readLink(from))
            case S_IFREG:
                try fm.copyItem(atPath: from, toPath: to)
                chmod(to, info.st_mode & 0o7777)
            default:
                continue
            }
        }
    }
}
