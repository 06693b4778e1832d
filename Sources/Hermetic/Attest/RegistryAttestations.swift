import Foundation

/// An image read from a registry by `inspect`, `verify` or `rebuild`: the digest read (a tag is resolved
/// once, and only its digest is used after that) and the tag it was resolved from.
public struct RegistryImage: Sendable {
    /// `REG/REPO@sha256:…`: the digest read.
    public var reference: RegistryReference
    /// The tag given, when it was resolved to that digest (none when a digest was given).
    public var resolvedTag: String?
    public var top: Descriptor
    /// How the attestations were found (`referrers API`, `referrers tag sha256-…`, BuildKit's index).
    public var foundThrough: [String]
    /// How it was reached, to fetch more of it later (a layer whose files rebuild compares).
    public var access: RegistryAccess

    /// `REG/REPO@sha256:…`, and ` (tag T)` when a tag was resolved to it.
    public var shown: String {
        "\(reference.name)@\(top.digest)" + (resolvedTag.map { " (tag \($0))" } ?? "")
    }
}

extension RegistryImage {
    /// Fetches one blob of the image to `path`, verified (`RegistryAttestationFetcher.download`).
    public func download(_ descriptor: Descriptor, to path: String) async throws {
        let client = try access.makeClient(registry: reference.registry)
        do {
            try await RegistryAttestationFetcher(client: client).download(reference, descriptor, to: path)
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
    }
}

extension StoredAttestations {
    /// The registry reference `target` is read as: one that names no file or layout here (nor `DIR:tag`
    /// of an existing `DIR`), parses as an image reference (docker's normalization: `app:1` is
    /// `docker.io/library/app:1`), and names a registry host, a tag or a digest. A bare `out` or `a/b` is a
    /// missing layout, said at once: a typed path must not turn into a wait on Docker Hub. nil for every
    /// other target, which `load` reads as before.
    public static func registryReference(_ target: String) -> RegistryReference? {
        if FileSystem.exists(target) { return nil }
        if let colon = target.lastIndex(of: ":"), FileSystem.exists(String(target[..<colon])) { return nil }
        let lastComponent = target.split(separator: "/").last ?? ""
        guard hasExplicitHost(target) || target.contains("@") || lastComponent.contains(":") else { return nil }
        return try? RegistryReference(parsing: target)
    }

    /// Whether the first component of `target` names a registry host, as docker tells them apart.
    static func hasExplicitHost(_ target: String) -> Bool {
        guard target.contains("/"), let first = target.split(separator: "/").first else { return false }
        return first.contains(".") || first.contains(":") || first == "localhost" || first.hasPrefix("[")
    }

    /// Reads `target` — a layout `DIR[:tag]`, an attestation file, or a registry reference
    /// (`REG/REPO@sha256:…` or `REG/REPO[:TAG]`) — and hands the attestations to `body`. A registry image's
    /// manifests and attestations are fetched into a temporary layout under `$TMPDIR` (else /tmp), read by
    /// the layout reader, and removed when `body` returns.
    public static func withTarget<T>(
        _ target: String, access: RegistryAccess, _ body: (StoredAttestations) async throws -> T
    ) async throws -> T {
        guard let reference = registryReference(target) else { return try await body(try load(target)) }
        let explicitHost = hasExplicitHost(target)
        let client = try access.makeClient(registry: reference.registry)
        let parent = FileSystem.absolute(access.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp")
        let layout: String
        do {
            layout = try FileSystem.makeTemporaryDirectory(in: parent, prefix: "hermetic-registry-attestations-")
        } catch {
            await client.shutdown()
            throw error
        }
        do {
            let fetched: RegistryAttestationFetcher.Fetched
            do {
                fetched = try await RegistryAttestationFetcher(client: client).fetch(reference, into: layout)
            } catch var error as RegistryError where !explicitHost {
                // `app:1` may have been meant as a layout here: say that none is.
                error.reason += " (and no file or image layout \(target) is here)"
                throw error
            }
            await client.shutdown()
            var pinned = fetched.reference
            pinned.tag = nil
            let image = RegistryImage(
                reference: pinned, resolvedTag: reference.digest == nil ? (reference.tag ?? "latest") : nil,
                top: fetched.top, foundThrough: fetched.foundThrough, access: access)
            var stored = try fromLayout(layout, tag: nil, registry: image.shown)
            stored.source = image.shown
            stored.registryImage = image
            let result = try await body(stored)
            FileSystem.removeTree(layout)
            return result
        } catch {
            await client.shutdown()
            FileSystem.removeTree(layout)
            throw error
        }
    }
}
