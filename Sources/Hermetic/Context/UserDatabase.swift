/// `/etc/passwd` and `/etc/group` of a stage's root filesystem, read as data (inside the root, size-capped,
/// junk lines ignored), to turn `--chown` and `USER` values into numeric ids.
public struct UserDatabase: Sendable {
    struct Account: Sendable {
        var name: String
        var uid: UInt32
        var gid: UInt32
    }

    private var users: [Account] = []
    private var groups: [(name: String, gid: UInt32, members: [String])] = []

    public struct LookupError: HermeticError {
        public var what: String
        public var description: String { what }
    }

    public init(root: String) throws {
        users = Self.records(root: root, path: "etc/passwd").compactMap { fields in
            guard fields.count >= 4, let uid = UInt32(fields[2]), let gid = UInt32(fields[3]) else { return nil }
            return Account(name: fields[0], uid: uid, gid: gid)
        }
        groups = Self.records(root: root, path: "etc/group").compactMap { fields in
            guard fields.count >= 3, let gid = UInt32(fields[2]) else { return nil }
            let members = fields.count >= 4 ? fields[3].split(separator: ",").map(String.init) : []
            return (fields[0], gid, members)
        }
    }

    private static func records(root: String, path: String) -> [[String]] {
        guard let resolved = try? RootedPath.resolve(path, inRoot: root),
            let bytes = try? FileSystem.readFile(root + "/" + resolved.joined(separator: "/"), limit: 4 << 20)
        else { return [] }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map {
            $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        }
    }

    /// The owner of files BuildKit's file operations make (`--chown`, and WORKDIR's mkdir as the current USER),
    /// as its readUser finds it: `user[:group]`, each a name or a number; without a group, a user name takes
    /// its passwd entry's gid, a numeric uid is its own gid (Dockerfile reference: "a UID without GID will use
    /// the same numeric UID as the GID"). An empty user or group is id 0, as BuildKit's llb.WithUser marshals
    /// an empty name (`:` is 0:0, `1000:` is 1000:0, `:1000` is 0:1000).
    /// `root` is id 0 without a lookup, as BuildKit's parseUID takes it (`COPY --chown=root:root` into a
    /// stage without /etc/passwd, such as scratch).
    public func resolveOwner(_ spec: String) throws -> (uid: UInt32, gid: UInt32) {
        let parts = spec.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map {
            $0 == "root" ? "0" : String($0)
        }
        let uid = parts[0].isEmpty ? 0 : try userID(parts[0], spec: spec)
        if parts.count == 2 { return (uid, parts[1].isEmpty ? 0 : try groupID(parts[1], spec: spec)) }
        if parts[0].isEmpty || UInt32(parts[0]) != nil { return (uid, uid) }
        return (uid, users.first { $0.name == parts[0] }?.gid ?? uid)
    }

    /// `USER` rules (Docker): `user[:group]`; without a group, a named user gets its passwd primary group,
    /// a numeric uid gets its passwd primary group if it has an entry, else gid 0.
    /// A RUN step's ids as BuildKit's executor takes them (oci.GetUser, runc's GetExecUser): no USER is
    /// root; `uid:gid` in numbers is taken as it is; otherwise the user is looked up, and without an
    /// explicit group its gid is the passwd entry's and its supplementary groups are those of /etc/group
    /// that list its name. The primary gid always leads the group list (BuildKit's ensureAdditionalGids).
    public func resolveUser(_ spec: String) throws -> (uid: UInt32, gid: UInt32, groups: [UInt32]) {
        if spec.isEmpty && !users.contains(where: { $0.name == "root" }) { return (0, 0, [0]) }
        let text = spec.isEmpty ? "root" : spec
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        if parts.count == 2, let uid = UInt32(parts[0]), let gid = UInt32(parts[1]) { return (uid, gid, [gid]) }
        let uid = try userID(parts[0], spec: text)
        let account = users.first { $0.uid == uid && (UInt32(parts[0]) != nil || $0.name == parts[0]) }
        let gid = parts.count == 2 ? try groupID(parts[1], spec: text) : (account?.gid ?? 0)
        var supplementary: [UInt32] = []
        if parts.count == 1, let account {
            supplementary = groups.filter { $0.members.contains(account.name) }.map(\.gid)
        }
        return (uid, gid, supplementary.contains(gid) ? supplementary : [gid] + supplementary)
    }

    private func userID(_ text: String, spec: String) throws -> UInt32 {
        guard !text.isEmpty else { throw LookupError(what: "\"\(spec)\": the user is empty") }
        if let number = UInt32(text) { return number }
        guard let account = users.first(where: { $0.name == text }) else {
            throw LookupError(what: "unable to find user \(text): no matching entries in passwd file")
        }
        return account.uid
    }

    private func groupID(_ text: String, spec: String) throws -> UInt32 {
        guard !text.isEmpty else { throw LookupError(what: "\"\(spec)\": the group is empty") }
        if let number = UInt32(text) { return number }
        guard let group = groups.first(where: { $0.name == text }) else {
            throw LookupError(what: "unable to find group \(text): no matching entries in group file")
        }
        return group.gid
    }
}
