"""annexsync: a fast, git-annex compatible implementation of the git-annex assistant.

Layers (each a package; lower layers never import higher ones):

- ``annexsync.util``    small helpers with no knowledge of git or annex (atomic writes, progress)
- ``annexsync.git``     every conversation with git: long-lived batch processes, plumbing
- ``annexsync.annex``   the git-annex repository model: keys, object store, logs, journal, branch
- ``annexsync.policy``  pure decisions: preferred content / largefiles expressions, numcopies
- ``annexsync.cli``     one module per command
- ``annexsync.testing`` fakes shipped with the package (clock, hermetic git environment)
"""

__version__ = "0.1.0"
