// How a stage's root filesystem is made, and only when a step reads it (SPEC §10).
//
// In: a stage's layers (a base image's blobs, tars this build made or found in its cache). Out: a
// directory holding the stage's filesystem. With snapshots (the default where overlayfs works), each
// layer is unpacked once per store (Store/SnapshotStore.swift) and the root is a read-only overlay of
// the snapshots, mounted in the workspace; otherwise the layers are unpacked into a plain directory of
// the workspace, in order, as each step needs them.

import Sandbox

#if canImport(Glibc)
    import Glibc
#endif

extension StageExecutor {
    /// The snapshot store when this build can stack snapshots: not in a user namespace (rootless mode), not
    /// without CAP_SYS_ADMIN (a container that withholds it: RUN then names what it lacks),
    /// not with the store or the workspace on overlayfs (a third overlay level is refused), not with a
    /// path overlayfs options cannot name, and not turned off (`HERMETIC_SNAPSHOTS=off`).
    static func snapshotStore(
        for store: ContentStore, workspace: String, environment: [String: String]
    ) throws -> SnapshotStore? {
        guard environment["HERMETIC_SNAPSHOTS"] != "off", !UserNamespace.isNested,
            BuilderCapabilities.current?.canMount ?? false,
            !Sandbox.isOnOverlayfs(store.root), !Sandbox.isOnOverlayfs(workspace),
            Sandbox.canNameInOverlayOptions(store.root), Sandbox.canNameInOverlayOptions(workspace)
        else { return nil }
        return try SnapshotStore(store: store)
    }

    /// Makes the filesystem of `state` hold all its layers, before a step reads it.
    mutating func materialize(_ state: inout StageState) throws {
        guard state.applied < state.layers.count else { return }
        if snapshots != nil, let root = try snapshotRoot(of: state.layers) {
            state.rootfs = root
            state.rootIsReadOnlyMount = true
            state.applied = state.layers.count
            return
        }
        if state.rootIsReadOnlyMount {
            // Snapshots stopped (a stack too long to name): unpack everything into a directory of its own.
            state.rootfs = try nextDirectory("rootfs")
            state.rootIsReadOnlyMount = false
            state.applied = 0
        }
        while state.applied < state.layers.count {
            try unpack(state.layers[state.applied], to: state.rootfs)
            state.applied += 1
        }
    }

    /// Stage `index` with its filesystem made, for a step that reads it (`COPY --from`, a bind mount).
    /// Stages that run at the same time share a finished stage's filesystem: it is made once, under its lock.
    mutating func materializeStage(_ index: Int) throws -> StageState? {
        guard var other = stages[index] else { return nil }
        if let finishedStages {
            other = try finishedStages.materialized(index) { try materialize(&$0) } ?? other
            stages[index] = other
            return other
        }
        try materialize(&other)
        stages[index] = other
        return other
    }

    /// Applies one layer to `root`, checking its diff_id as it goes: a damaged tar in the store is named
    /// with the way out, a base image's layer as the hostile input it may be.
    func unpack(_ layer: LayerRecord, to root: String) throws {
        do {
            try apply(layer, to: root)
        } catch let error as LayerError where layer.madeByBuild {
            throw StoredBlobError(layer: layer.displayName, reason: error.description)
        }
    }

    /// A read-only overlay of the snapshots of `layers` (each made first where the store lacks it), or
    /// nil when this stack cannot be mounted: then the caller unpacks into a directory.
    mutating func snapshotRoot(of layers: [LayerRecord]) throws -> String? {
        guard let snapshots else { return nil }
        var lowers: [String] = []  // top first, as overlayfs lists them
        var chain: Digest?
        do {
            for layer in layers {
                let id = SnapshotStore.chainID(parent: chain, diffID: layer.diffID)
                if let filesystem = snapshots.filesystem(id, blob: layer.descriptor.digest) {
                    lowers.insert(filesystem, at: 0)
                } else {
                    guard StageRootMount.fits(lowers) else { return nil }
                    let mountpoint = try nextDirectory("snapshot")
                    let filesystem = try snapshots.make(
                        id, parent: chain, diffID: layer.diffID, blob: layer.descriptor.digest, lowers: lowers,
                        mountpoint: mountpoint, unpack: { try unpack(layer, to: $0) })
                    lowers.insert(filesystem, at: 0)
                }
                chain = id
            }
            guard let chain else { return try nextDirectory("rootfs") }
            if let mounted = snapshotMounts[chain] { return mounted }
            guard StageRootMount.fits(lowers) else { return nil }
            let root = try nextDirectory("rootfs")
            try StageRootMount.mountReadOnly(lowers: lowers, empty: try emptyDirectory(), at: root)
            snapshotMounts[chain] = root
            return root
        } catch let error as StageRootMount.MountError {
            // overlayfs refused (a kernel or a container without it): the rest of the build unpacks.
            log.warning("\(error); stage filesystems are unpacked into the workspace instead (slower, same layers)")
            self.snapshots = nil
            return nil
        }
    }

    private mutating func emptyDirectory() throws -> String {
        if let emptySnapshotLower { return emptySnapshotLower }
        let directory = try nextDirectory("empty")
        emptySnapshotLower = directory
        return directory
    }

    /// The filesystem of a resolved image's layers (for `COPY --from=image` and bind mounts).
    mutating func unpackedImage(_ layers: [LayerRecord]) throws -> String {
        if let root = try snapshotRoot(of: layers) { return root }
        let root = try nextDirectory("image-rootfs")
        for layer in layers { try apply(layer, to: root) }
        return root
    }
}
