/// A registry failure: one line naming the registry host and what was asked of it, never a credential.
public struct RegistryError: HermeticError {
    public var host: String
    /// What was being fetched (`busybox manifest sha256:…`, `blob sha256:…`), or empty.
    public var subject: String
    public var reason: String
    /// Whether asking again may succeed (429, 5xx, a dropped connection or a body cut short).
    var retryable = false

    public init(host: String, subject: String, reason: String) {
        self.host = host
        self.subject = subject
        self.reason = reason
    }

    init(host: String, subject: String, reason: String, retryable: Bool) {
        self.init(host: host, subject: subject, reason: reason)
        self.retryable = retryable
    }

    public var description: String {
        subject.isEmpty ? "registry \(host): \(reason)" : "registry \(host): \(subject): \(reason)"
    }
}
