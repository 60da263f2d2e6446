"""annexsync.remotes: one module per kind of remote, behind the seam in base.py."""
