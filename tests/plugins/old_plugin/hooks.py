"""Nothing to hook: the manifest's core_versions is what is being tested."""
