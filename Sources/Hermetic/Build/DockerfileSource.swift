import Foundation
import Provenance

/// Where a build's Dockerfile came from, as the provenance records it (`externalParameters.dockerfile`), so
/// that `hermetic rebuild` can find the same bytes again (SPEC.md §9).
struct DockerfileSource: Sendable, Equatable {
    enum Origin: String, Sendable {
        /// A file inside the build context: the context copy holds it.
        case context
        /// `-f -`: nothing on disk holds it, so the provenance carries its bytes.
        case stdin
        /// A file outside the context (`-f ../docker/Dockerfile`): its bytes are carried too, and `rebuild`
        /// asks for the file itself (`-f`), since a `NAME.dockerignore` beside it shapes the context.
        case outsideContext = "outside-context"
    }

    var origin: Origin
    /// `-` for stdin; else the path relative to the context, with `..` when outside it (never a host path).
    var path: String
    var digest: Digest
    /// The bytes, carried in the provenance only when nothing in the context holds them.
    var content: [UInt8]?

    /// `given` is the `-f` value as typed (nil: the default), `resolved` the file actually read.
    init(given: String?, resolved: String, contextRoot: String, bytes: [UInt8]) {
        digest = Digest.sha256(of: bytes)
        guard given != "-" else {
            origin = .stdin
            path = "-"
            content = bytes
            return
        }
        // Symlinks and `..` resolved on both sides: `CONTEXT/../docker/Dockerfile` is outside the context.
        let file = FileSystem.resolvedPath(resolved).split(separator: "/").map(String.init)
        let root = FileSystem.resolvedPath(contextRoot).split(separator: "/").map(String.init)
        var common = 0
        while common < min(file.count, root.count), file[common] == root[common] { common += 1 }
        let relative = Array(repeating: "..", count: root.count - common) + file[common...]
        path = relative.joined(separator: "/")
        if common == root.count {
            origin = .context
            content = nil
        } else {
            origin = .outsideContext
            content = bytes
        }
    }

    init(origin: Origin, path: String, digest: Digest, content: [UInt8]?) {
        self.origin = origin
        self.path = path
        self.digest = digest
        self.content = content
    }

    /// `externalParameters.dockerfile`: `content` is base64, as in-toto's ResourceDescriptor carries bytes
    /// (BuildKit's max-mode provenance carries the same bytes as `source.infos[].data`). A file in the
    /// context has no `origin`: its statement stays byte-identical to those written before `origin` existed,
    /// and so does the image index that holds it.
    var parameter: JSONValue {
        var object: [String: JSONValue] = [
            "path": .string(path), "digest": .object(["sha256": .string(digest.hex)]),
        ]
        if origin != .context { object["origin"] = .string(origin.rawValue) }
        if let content { object["content"] = .string(Data(content).base64EncodedString()) }
        return .object(object)
    }

    struct RecordError: HermeticError {
        var reason: String
        var description: String { "the provenance's externalParameters.dockerfile: \(reason)" }
    }

    /// Reads `externalParameters.dockerfile` back: no `origin` is a file in the context. Carried content
    /// must hash to the recorded digest.
    init(recorded value: JSONValue?) throws {
        guard let value else { throw RecordError(reason: "missing") }
        guard let hex = value["digest"]?["sha256"]?.stringValue, let digest = try? Digest(parsing: "sha256:" + hex)
        else { throw RecordError(reason: "no well-formed digest.sha256") }
        let originText = value["origin"]?.stringValue ?? Origin.context.rawValue
        guard let origin = Origin(rawValue: originText) else {
            throw RecordError(reason: "unknown origin \"\(originText)\" (expected context, stdin or outside-context)")
        }
        var content: [UInt8]?
        if let text = value["content"]?.stringValue {
            guard let bytes = Data(base64Encoded: text).map(Array.init) else {
                throw RecordError(reason: "content is not valid base64")
            }
            let actual = Digest.sha256(of: bytes)
            guard actual == digest else {
                throw RecordError(reason: "content has \(actual), but the recorded digest is \(digest)")
            }
            content = bytes
        }
        self.init(
            origin: origin, path: value["path"]?.stringValue ?? (origin == .stdin ? "-" : "Dockerfile"),
            digest: digest, content: content)
    }
}
