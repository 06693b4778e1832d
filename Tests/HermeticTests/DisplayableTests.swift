import Testing

@testable import Hermetic

/// Names in errors are printed so that different names never print the same, and always on one line.
@Suite struct DisplayableTests {
    @Test func controlCharactersHaveFixedWidthEscapes() {
        #expect(displayable("a\nb") == #"a\nb"#)
        #expect(displayable("a\tb\rc") == #"a\tb\rc"#)
        // Two hex digits always: BEL then "b" is not read as one byte 0x7b.
        #expect(displayable("\u{7}b") == #"\x07b"#)
        #expect(displayable("\u{7f}") == #"\x7f"#)
        #expect(displayable("\u{1b}[31m") == #"\x1b[31m"#)
    }

    @Test func backslashIsEscapedSoEscapesAreUnambiguous() {
        #expect(displayable(#"a\nb"#) == #"a\\nb"#)
        #expect(displayable("a\nb") != displayable(#"a\nb"#))
        #expect(displayable(#"caf\xe9"#) == #"caf\\xe9"#)
        #expect(displayable(bytes: [0x63, 0x61, 0x66, 0xe9]) == #"caf\xe9"#)
        #expect(displayable(bytes: [0x63, 0x61, 0x66, 0xe9]) != displayable(#"caf\xe9"#))
        // A newline followed by "b" and the byte 0xab followed by nothing print differently.
        #expect(displayable(bytes: [0x0a, 0x62]) != displayable(bytes: [0xab]))
    }

    @Test func bytesThatAreNotUTF8AreEscapedOneByOne() {
        #expect(displayable(bytes: Array("café".utf8)) == "café")
        #expect(displayable(bytes: [0xff, 0xfe, 0x41]) == #"\xff\xfeA"#)
        // A truncated sequence, an overlong encoding and a surrogate are all invalid.
        #expect(displayable(bytes: [0xc3]) == #"\xc3"#)
        #expect(displayable(bytes: [0xc0, 0xaf]) == #"\xc0\xaf"#)
        #expect(displayable(bytes: [0xed, 0xa0, 0x80]) == #"\xed\xa0\x80"#)
    }

    @Test func invisibleLineBreakersAndBidiOverridesAreEscaped() {
        #expect(displayable("a\u{2028}b") == #"a\u{2028}b"#)
        #expect(displayable("\u{202E}txt.exe") == #"\u{202E}txt.exe"#)
        #expect(displayable("\u{85}") == #"\u{85}"#)
    }

    @Test func longNamesAreCut() {
        #expect(displayable(String(repeating: "a", count: 300)) == String(repeating: "a", count: 300))
        #expect(displayable(String(repeating: "a", count: 400)) == String(repeating: "a", count: 300) + "…")
        #expect(displayable(bytes: [UInt8](repeating: 0xff, count: 301)).hasSuffix(#"\xff…"#))
    }
}
