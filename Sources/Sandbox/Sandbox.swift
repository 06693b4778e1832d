public enum SandboxModule {}
