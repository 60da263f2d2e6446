"""annexsync.sync: git-level and content-level syncing with remotes."""
