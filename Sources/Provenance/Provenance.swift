public enum ProvenanceModule {}
