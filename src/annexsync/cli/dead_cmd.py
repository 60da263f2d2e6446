"""annexsync dead: hide repositories that are lost for good."""

from __future__ import annotations

from annexsync.annex.logs import DEAD
from annexsync.cli.repoconfig import trust_command

NAME = "dead"
HELP = "hide a lost repository"
DESCRIPTION = """\
Record in trust.log on the git-annex branch that each REPO is dead (destroyed or
lost), and empty its set of groups in group.log, as git-annex does. Copies in a
dead repository never count, whereis and info stop listing it, and preferred
content ignores it. The location log is kept, so 'annexsync semitrust REPO'
brings it back if it turns up again.

REPO is 'here' (or '.'), a remote name, a repository description or a UUID.
"""

build_parser, run = trust_command(NAME, DEAD)
