import Foundation
import Testing

@testable import Sandbox

/// The parts of rootless mode that read files: subordinate ranges and id maps.
@Suite struct UserNamespaceTests {
    @Test func subordinateRangeByNameOrUID() {
        let text = """
            # comment:1:2
            alice:100000:65536
            1001:200000:1000
            broken:x:10
            zero:300000:0
            bob:400000:65536
            bob:500000:10
            """
        #expect(UserNamespace.subordinateRange(in: text, name: "alice", id: 1000)! == (100000, 65536))
        #expect(UserNamespace.subordinateRange(in: text, name: nil, id: 1001)! == (200000, 1000))
        #expect(UserNamespace.subordinateRange(in: text, name: "bob", id: 7)! == (400000, 65536))
        #expect(UserNamespace.subordinateRange(in: text, name: "broken", id: 3) == nil)
        #expect(UserNamespace.subordinateRange(in: text, name: "zero", id: 4) == nil)
        #expect(UserNamespace.subordinateRange(in: text, name: "carol", id: 5) == nil)
        // A range running past the last id is no range.
        #expect(UserNamespace.subordinateRange(in: "dave:4294967290:10\n", name: "dave", id: 6) == nil)
    }

    @Test func mapsAndMembership() {
        let ranges = UserNamespace.parseMap("         0        999          1\n         1     300000      65536\n")
        #expect(
            ranges == [
                .init(inside: 0, outside: 999, count: 1), .init(inside: 1, outside: 300000, count: 65536),
            ])
        #expect(ranges[0].contains(0) && !ranges[0].contains(1))
        #expect(ranges[1].contains(1) && ranges[1].contains(65536) && !ranges[1].contains(65537))
        #expect(UserNamespace.parseMap("garbage\n1 2\n") == [])
    }

    @Test func theTestsRunInTheHostsNamespace() {
        // Root on the host: the identity map over every id, so overlay markers are trusted.* here.
        #expect(!UserNamespace.isNested)
        #expect(UserNamespace.overlayXattrPrefix == "trusted.overlay.")
    }
}

@Suite struct BuilderCapabilitiesTests {
    @Test func statusLinesAreRead() throws {
        let status =
            "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\n"
            + "CapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\n"
        let capabilities = try #require(BuilderCapabilities.parse(status))
        #expect(capabilities.effective == 0xa804_25fb)
        // Docker's default set is exactly this mask: nothing withheld; the sandbox lacks SYS_ADMIN, NET_ADMIN.
        #expect(capabilities.withheldFromSteps.isEmpty)
        #expect(capabilities.missingForSandbox(hostNetwork: false) == ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"])
        #expect(capabilities.missingForSandbox(hostNetwork: true) == ["CAP_SYS_ADMIN"])
        #expect(BuilderCapabilities.parse("CapEff:\tzz\n") == nil)
    }
}

@Suite struct CgroupMountsTests {
    @Test func aContainersCgroupIsFoundBelowItsMountRoot() {
        let mountinfo = """
            25 30 0:22 / /sys rw - sysfs sysfs rw
            30 25 0:26 /libpod_parent/libpod-abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw
            31 25 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
            """
        let mounts = CgroupMounts(mountinfo: mountinfo)
        #expect(mounts.directory(of: "/libpod_parent/libpod-abc", under: "/sys/fs/cgroup") == "/sys/fs/cgroup")
        #expect(mounts.directory(of: "/libpod_parent/libpod-abc/x", under: "/sys/fs/cgroup") == "/sys/fs/cgroup/x")
        #expect(
            mounts.directory(of: "/libpod_parent/libpod-abcd", under: "/sys/fs/cgroup")
                == "/sys/fs/cgroup/libpod_parent/libpod-abcd")
        #expect(mounts.directory(of: "/user.slice", under: "/sys/fs/cgroup/pids") == "/sys/fs/cgroup/pids/user.slice")
        #expect(mounts.directory(of: "/", under: "/sys/fs/cgroup/pids") == "/sys/fs/cgroup/pids")
        #expect(mounts.directory(of: "/a", under: "/sys/fs/cgroup/unified") == "/sys/fs/cgroup/unified/a")
    }
}
