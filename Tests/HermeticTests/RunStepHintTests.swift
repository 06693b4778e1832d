import Glibc
import Sandbox
import Testing

@testable import Hermetic

/// Refusals that mean the builder runs in a container that withholds something get a hint naming it.
@Suite struct RunStepHintTests {
    @Test func containerRefusalsNameWhatToGrant() {
        let proc = SandboxError.childSetup(step: "mount proc", opIndex: 1, path: "proc", errno: EPERM)
        #expect(StageExecutor.hint(for: proc).contains("--security-opt unmask=ALL"))
        let hostname = SandboxError.childSetup(step: "sethostname", opIndex: nil, path: "x", errno: EPERM)
        #expect(StageExecutor.hint(for: hostname).contains("seccomp=unconfined"))
        let other = SandboxError.childSetup(step: "mount proc", opIndex: 1, path: "proc", errno: ENOENT)
        #expect(StageExecutor.hint(for: other).isEmpty)
        #expect(StageExecutor.hint(for: .invalidPlan(field: "argv", reason: "empty")).isEmpty)
    }
}
