#if canImport(Glibc)
    import Glibc
#endif

/// Everything that can stop a sandboxed step before or around its command. (The command failing is
/// not an error: it is a `SandboxResult`.) `description` is one line naming the step and the path.
public enum SandboxError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The plan itself is unusable: `field` names the part, `reason` says why.
    case invalidPlan(field: String, reason: String)
    /// A mountpoint in the image cannot be used safely (a parent is a symlink or not a directory).
    case unsafeMountpoint(path: String, reason: String)
    /// A host-side system call failed while preparing or collecting the step.
    case system(call: String, path: String, errno: Int32)
    /// libseccomp refused the policy (`code` is its negative errno).
    case seccomp(call: String, syscall: String?, code: Int32)
    /// No pids controller to enforce `pidsLimit` (see `PidsCgroup`).
    case pidsLimitUnavailable(reason: String)
    /// The child failed between clone and execve: `step` names the stage, `path` what it acted on.
    case childSetup(step: String, opIndex: Int?, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .invalidPlan(let field, let reason):
            return "sandbox plan: \(field): \(reason)"
        case .unsafeMountpoint(let path, let reason):
            return "sandbox: refusing mountpoint \(path): \(reason)"
        case .system(let call, let path, let code):
            return "sandbox: \(call) \(path): \(errnoText(code))"
        case .seccomp(let call, let syscall, let code):
            return "sandbox seccomp: \(call)\(syscall.map { " \($0)" } ?? ""): \(errnoText(-code))"
        case .pidsLimitUnavailable(let reason):
            return "sandbox: cannot enforce the pids limit: \(reason)"
        case .childSetup(let step, let opIndex, let path, let code):
            let op = opIndex.map { " (mount op \($0))" } ?? ""
            return "sandbox: step failed at \(step)\(op) on \(path): \(errnoText(code))"
        }
    }
}

func errnoText(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return "\(String(cString: text)) (errno \(code))"
}
