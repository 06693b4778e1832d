import Foundation

/// The grammar of an image name as `-t` takes it (the distribution project's reference grammar):
/// `[HOST[:PORT]/]PATH[:TAG][@sha256:HEX]`, PATH components lowercase letters and digits joined by `.`,
/// `_`, `__` or dashes; a tag of word characters, `.` and `-`, 128 at most; the name 255 characters at most.
public enum ImageReference {
    private static let pattern: NSRegularExpression? = {
        let domainComponent = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
        let domain = "(?:\(domainComponent)(?:\\.\(domainComponent))*(?::[0-9]+)?|\\[[0-9a-fA-F:]+\\](?::[0-9]+)?)"
        let component = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
        let name = "(?:\(domain)/)?\(component)(?:/\(component))*"
        let tag = "[\\w][\\w.-]{0,127}"
        let digest = "sha256:[a-f0-9]{64}"
        return try? NSRegularExpression(pattern: "^(\(name))(?::(\(tag)))?(?:@\(digest))?$")
    }()

    /// Why `text` is not a valid image name, or nil when it is.
    public static func problem(_ text: String) -> String? {
        guard let pattern else { return "the reference grammar did not compile" }
        let range = NSRange(text.startIndex..., in: text)
        guard let match = pattern.firstMatch(in: text, range: range),
            let nameRange = Range(match.range(at: 1), in: text)
        else {
            return text.lowercased() != text && pattern.firstMatch(in: text.lowercased(), range: range) != nil
                ? "repository name must be lowercase" : "invalid reference format"
        }
        guard text[nameRange].count <= 255 else { return "repository name must not be more than 255 characters" }
        return nil
    }
}
