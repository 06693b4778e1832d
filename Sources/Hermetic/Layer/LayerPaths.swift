/// The paths one layer names — its entries, the directories its whiteouts are in, and every directory
/// above them — as a trie of path components, each node a small integer.
///
/// Adding or finding a path of depth D takes D steps and at most D new nodes, and a node is shared by
/// every path through the same directory. A set of whole paths (every prefix of every entry stored in
/// full) cost D² bytes for one deep entry, so a layer of a few kilobytes of deep whiteouts grew to
/// gigabytes. Per-directory bookkeeping (times to restore, metadata to apply after the contents) is
/// keyed by node for the same reason. Names are interned and nodes are 32-bit, so a node costs a few
/// dozen bytes; their number is capped (`LayerLimits.maxPaths`).
struct LayerPaths {
    static let root = 0

    /// Each distinct name once, by id.
    private var nameIDs: [[UInt8]: Int32] = [:]
    private var nameList: [[UInt8]] = []
    /// (parent node << 32 | name id) → child node.
    private var edges: [UInt64: Int32] = [:]
    /// Per node: its name id, its parent, and links to list its children without a scan.
    private var nodeNames: [Int32] = [-1]
    private var parents: [Int32] = [-1]
    private var firstChild: [Int32] = [-1]
    private var nextSibling: [Int32] = [-1]
    let limit: Int

    init(limit: Int) {
        self.limit = min(limit, Int(Int32.max) - 1)
    }

    /// Paths recorded (the root is not one).
    var count: Int { nodeNames.count - 1 }

    private static func key(_ parent: Int, _ name: Int32) -> UInt64 {
        UInt64(UInt32(truncatingIfNeeded: parent)) << 32 | UInt64(UInt32(bitPattern: name))
    }

    /// The node of every prefix of `components` (`result[i]` stands for `components[...i]`), adding the
    /// missing ones; nil when that would pass the limit (nothing is added then).
    mutating func insert(_ components: some Collection<[UInt8]>) -> [Int]? {
        var result: [Int] = []
        result.reserveCapacity(components.count)
        var node = Self.root
        for name in components {
            guard let next = child(of: node, named: name) else { break }
            result.append(next)
            node = next
        }
        guard count + components.count - result.count <= limit else { return nil }
        for name in components.dropFirst(result.count) {
            let nameID: Int32
            if let known = nameIDs[name] {
                nameID = known
            } else {
                nameID = Int32(nameList.count)
                nameIDs[name] = nameID
                nameList.append(name)
            }
            let next = nodeNames.count
            edges[Self.key(node, nameID)] = Int32(next)
            nodeNames.append(nameID)
            parents.append(Int32(node))
            firstChild.append(-1)
            nextSibling.append(firstChild[node])
            firstChild[node] = Int32(next)
            result.append(next)
            node = next
        }
        return result
    }

    /// The node for `name` directly below `node`, if the layer named it (or something below it).
    func child(of node: Int, named name: [UInt8]) -> Int? {
        guard let nameID = nameIDs[name], let next = edges[Self.key(node, nameID)] else { return nil }
        return Int(next)
    }

    /// The children of `node`, as (name, node), in no particular order.
    func children(of node: Int) -> [(name: [UInt8], node: Int)] {
        var result: [(name: [UInt8], node: Int)] = []
        var next = Int(firstChild[node])
        while next >= 0 {
            result.append((nameList[Int(nodeNames[next])], next))
            next = Int(nextSibling[next])
        }
        return result
    }

    func hasChildren(_ node: Int) -> Bool { firstChild[node] >= 0 }

    /// The path of `node` from the root, for messages.
    func path(of node: Int) -> [UInt8] {
        var reversed: [[UInt8]] = []
        var current = node
        while current > Self.root {
            reversed.append(nameList[Int(nodeNames[current])])
            current = Int(parents[current])
        }
        return joinedPath(reversed.reversed())
    }
}
