/// Every error the builder reports to a person conforms to this: `description` is the
/// single line printed after `error: `, naming the file, line or argument at fault.
public protocol HermeticError: Error, CustomStringConvertible {}

/// A position in a Dockerfile, 1-based.
public struct SourcePosition: Hashable, Sendable, Comparable {
    public var line: Int
    public var column: Int
    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }
    public static func < (a: SourcePosition, b: SourcePosition) -> Bool {
        (a.line, a.column) < (b.line, b.column)
    }
}

/// A range of lines (and columns) in a Dockerfile; `end` is inclusive of its line.
public struct SourceRange: Hashable, Sendable {
    public var start: SourcePosition
    public var end: SourcePosition
    public init(start: SourcePosition, end: SourcePosition) {
        self.start = start
        self.end = end
    }
}

/// An error tied to a place in the Dockerfile: printed as `FILE:LINE: message`.
public struct DockerfileError: HermeticError, Equatable {
    public var file: String
    public var line: Int
    public var message: String
    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }
    public var description: String { "\(file):\(line): \(message)" }
}

/// A system call or file operation that failed, with errno and the path involved.
public struct SystemError: HermeticError {
    public var operation: String
    public var path: String
    public var errno: Int32
    public init(_ operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }
    public var description: String {
        "\(operation) \(Self.shortened(path)): \(String(cString: strerror(errno)))"
    }

    /// A path a hostile tree made thousands of bytes long stays readable in the one error line: its start
    /// and end, and how long it was.
    static func shortened(_ path: String) -> String {
        let count = path.utf8.count
        guard count > 400 else { return path }
        return "\(path.prefix(160))…(\(count) bytes)…\(path.suffix(160))"
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif
