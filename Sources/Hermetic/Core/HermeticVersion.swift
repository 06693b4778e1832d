/// The builder's version, recorded in images and provenance.
public enum HermeticVersion {
    public static let string = "0.1.0"
    /// The layer canonicalization this builder writes (SPEC.md §3); recorded in every manifest.
    public static let layerFormat = "1"
}
