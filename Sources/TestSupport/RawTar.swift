/// Tar archives written byte by byte, with no validation: hostile layers for tests (names such as
/// `.wh...` or `../x` that Hermetic's own writer refuses to produce).
public enum RawTar {
    public struct Entry: Sendable {
        public var name: String
        /// `0` regular file, `5` directory, …
        public var type: UInt8
        public var data: [UInt8]
        public init(name: String, type: UInt8 = UInt8(ascii: "0"), data: [UInt8] = []) {
            self.name = name
            self.type = type
            self.data = data
        }
    }

    /// A ustar archive of `entries` in order (names of at most 100 bytes), ending in two zero blocks.
    public static func archive(_ entries: [Entry]) -> [UInt8] {
        var out: [UInt8] = []
        for entry in entries {
            var header = [UInt8](repeating: 0, count: 512)
            func put(_ text: String, at offset: Int) {
                for (index, byte) in text.utf8.enumerated() { header[offset + index] = byte }
            }
            func octal(_ value: Int, width: Int) -> String {
                let digits = String(value, radix: 8)
                return String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits
            }
            put(String(entry.name.utf8.prefix(100)) ?? "", at: 0)
            put(octal(0o644, width: 8), at: 100)
            put(octal(0, width: 8), at: 108)
            put(octal(0, width: 8), at: 116)
            put(octal(entry.data.count, width: 12), at: 124)
            put(octal(1000, width: 12), at: 136)
            put("        ", at: 148)
            header[156] = entry.type
            put("ustar", at: 257)
            put("00", at: 263)
            let sum = header.reduce(0) { $0 + Int($1) }
            put(octal(sum, width: 7), at: 148)
            header[154] = 0
            header[155] = UInt8(ascii: " ")
            out += header + entry.data
            out += [UInt8](repeating: 0, count: (512 - entry.data.count % 512) % 512)
        }
        return out + [UInt8](repeating: 0, count: 1024)
    }
}
